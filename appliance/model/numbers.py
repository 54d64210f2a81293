"""Floats as people and scripts read them."""

from __future__ import annotations

import math
from typing import Any


def tidy(v: Any) -> Any:
    """A float without the noise of binary arithmetic (0.036000000000000004, 1.2e-13 left
    of a sum that is 0): rounded to 10 decimals (finer than any price, size or fee step) and
    12 significant digits. Anything else is returned as it is. Stored values stay exact;
    this is for outputs."""
    if not isinstance(v, float) or not math.isfinite(v):
        return v
    return float(f"{round(v, 10):.12g}") + 0.0  # + 0.0: no -0.0
