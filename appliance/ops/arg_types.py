"""argparse types for numbers with a sign rule: a bad value is a usage error naming it."""

from __future__ import annotations

import argparse


def non_negative_int(text: str) -> int:
    """An int >= 0 (``--limit``: 0 means all)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 or more")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0 (``--duration``: seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number")
    return value
