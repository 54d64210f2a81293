"""The 4 KiB header every segment starts with: writing it, and checking it on attach.

Checking reads every field as untrusted bytes (the file may be anything that got the
name: another build's segment, a half-written one, garbage), so every problem is a
:class:`SegmentMismatch` naming the field, never a decoding error from deep inside.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.shm.errors import SegmentMismatch
from appliance.shm.files import PAGE

MAGIC = b"DYNSHM01"
LAYOUT_VERSION = 1
HEADER_SIZE = 4096

HEADER = np.dtype(
    {
        "names": [
            "magic",
            "version",
            "record_size",
            "kind",
            "capacity",
            "owner_pid",
            "created_ns",
            "total_size",
            "data_offset",
            "dtype",
            "meta",
        ],
        "formats": ["S8", "<u4", "<u4", "S16", "<u8", "<i8", "<i8", "<u8", "<u8", "S2048", "S1024"],
        "offsets": [0, 8, 12, 16, 32, 40, 48, 56, 64, 128, 2176],
        "itemsize": HEADER_SIZE,
    }
)


def segment_bytes(data_size: int) -> int:
    """The size of a segment file whose data area holds ``data_size`` bytes."""
    return HEADER_SIZE + (data_size + PAGE - 1) // PAGE * PAGE


def describe_dtype(dtype: np.dtype) -> str:
    """A canonical text form of a record dtype: names, formats, offsets and size."""
    if dtype.names is None:
        return json.dumps({"format": dtype.str, "itemsize": dtype.itemsize})
    fields = [[name, dtype.fields[name][0].str, dtype.fields[name][1]] for name in dtype.names]
    return json.dumps({"fields": fields, "itemsize": dtype.itemsize}, separators=(",", ":"))


@dataclass(frozen=True)
class Expected:
    """What an attacher expects of a segment.

    ``data_size`` maps the header's capacity to the data bytes the structure needs, so a
    capacity that does not fit the file is refused before anything is mapped by it;
    ``meta`` entries must match exactly; ``meta_check`` returns problems with the rest.
    """

    kind: str
    dtype: np.dtype
    capacity: int | None = None
    data_size: Callable[[int], int] | None = None
    power_of_two: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    meta_check: Callable[[dict[str, Any]], list[str]] | None = None


def write_header(
    h: np.void, *, kind: str, dtype: np.dtype, capacity: int, total: int, meta: dict[str, Any]
) -> None:
    """Fill a fresh header; the magic goes last, so a header with magic is complete."""
    texts = {"kind": kind, "dtype": describe_dtype(dtype), "meta": json.dumps(meta)}
    for name, text in texts.items():
        raw, room = text.encode(), HEADER.fields[name][0].itemsize
        if len(raw) > room:
            raise ValueError(f"segment header field {name!r} takes {room} bytes, got {len(raw)}")
        h[name] = raw
    h["version"] = LAYOUT_VERSION
    h["record_size"] = dtype.itemsize
    h["capacity"] = capacity
    h["total_size"] = total
    h["data_offset"] = HEADER_SIZE
    h["magic"] = MAGIC


def check_header(h: np.void, name: str, expected: Expected, size: int) -> dict[str, Any]:
    """Raise SegmentMismatch naming every field that differs; return the segment's meta."""
    if bytes(h["magic"]) != MAGIC:
        raise SegmentMismatch(
            f"segment {name}: magic is {bytes(h['magic'])!r}, expected {MAGIC!r} "
            "(not a dynamind segment, or its creator died before finishing it)"
        )
    problems: list[str] = []
    version = int(h["version"])
    if version != LAYOUT_VERSION:
        problems.append(f"layout version {version} != expected {LAYOUT_VERSION}")
    kind = _text(h, "kind", problems)
    if kind is not None and kind != expected.kind:
        problems.append(f"kind {kind!r} != expected {expected.kind!r}")
    record_size = int(h["record_size"])
    if record_size != expected.dtype.itemsize:
        problems.append(f"record size {record_size} != expected {expected.dtype.itemsize}")
    found = _text(h, "dtype", problems)
    wanted = describe_dtype(expected.dtype)
    if found is not None and found != wanted:
        problems.append(_dtype_difference(found, wanted))
    problems += _size_problems(h, expected, size)
    meta = _meta(h, expected, problems)
    if problems:
        raise SegmentMismatch(f"segment {name}: " + "; ".join(problems))
    return meta


def _size_problems(h: np.void, expected: Expected, size: int) -> list[str]:
    problems = []
    capacity = int(h["capacity"])
    if expected.capacity is not None and capacity != expected.capacity:
        problems.append(f"capacity {capacity} != expected {expected.capacity}")
    elif expected.power_of_two and (capacity < 2 or capacity & (capacity - 1)):
        problems.append(f"capacity {capacity} is not a power of two >= 2")
    total = int(h["total_size"])
    if total != size:
        problems.append(f"total_size says {total} bytes but the segment has {size}")
    if int(h["data_offset"]) != HEADER_SIZE:
        problems.append(f"data_offset {int(h['data_offset'])} != expected {HEADER_SIZE}")
    if expected.data_size is not None:
        needed = segment_bytes(expected.data_size(capacity))
        if needed != size:
            problems.append(f"capacity {capacity} means {needed} bytes but the segment has {size}")
    elif HEADER_SIZE + capacity * expected.dtype.itemsize > size:
        problems.append(f"capacity {capacity} records do not fit in the segment's {size} bytes")
    return problems


def _meta(h: np.void, expected: Expected, problems: list[str]) -> dict[str, Any]:
    text = _text(h, "meta", problems)
    if text is None:
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        problems.append("meta is not valid JSON")
        return {}
    if not isinstance(meta, dict):
        problems.append(f"meta is {type(meta).__name__}, expected an object")
        return {}
    for key, value in expected.meta.items():
        if meta.get(key) != value:
            problems.append(f"meta {key} {meta.get(key)!r} != expected {value!r}")
    if expected.meta_check is not None:
        problems += expected.meta_check(meta)
    return meta


def _text(h: np.void, field_name: str, problems: list[str]) -> str | None:
    raw = bytes(h[field_name])
    try:
        return raw.decode()
    except UnicodeDecodeError:
        problems.append(f"{field_name} is not text: {raw[:24]!r}")
        return None


def _dtype_difference(found: str, expected: str) -> str:
    """Name the first field where two dtype descriptions part."""
    try:
        ff = json.loads(found).get("fields", [])
    except (json.JSONDecodeError, AttributeError):
        ff = None
    if not isinstance(ff, list):
        return f"record dtype is not a dtype description: {found[:48]!r}"
    ef = json.loads(expected).get("fields", [])
    for i in range(max(len(ff), len(ef))):
        a = ff[i] if i < len(ff) else None
        b = ef[i] if i < len(ef) else None
        if a != b:
            return f"record dtype differs at field {i}: segment has {a}, expected {b}"
    return f"record dtype differs: segment has {found}, expected {expected}"
