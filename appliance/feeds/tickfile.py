"""The on-disk tick file: what the recorder writes and the replay feed reads.

Layout (all integers little-endian)::

    offset 0   8 bytes   magic b"DMTICKS\\0"
    offset 8   u32       format version (FORMAT_VERSION)
    offset 12  u32       header length H: records start here; a multiple of 64
    offset 16  H-16      JSON (UTF-8), zero padded: {"dtype": {names, formats, offsets,
                         itemsize}, "symbols": [names, in symbol-index order],
                         "created_ns": int}
    offset H   ...       raw TICK records, 64 bytes each, in the order written

Records are appended after the header and never rewritten, so a crash can only leave a
partial last record (the file length is then not H + 64*n) or a zero-filled tail (the
length grew before the data reached the disk); the reader detects both, and the writer,
reopening a file to append, cuts such a tail off. The reader maps the file (np.memmap):
records are zero-copy views, and a file far larger than memory is fine.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from appliance.model.records import TICK, Side, TickKind

MAGIC = b"DMTICKS\x00"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sII")
_ALIGN = 64
# A header larger than this is not one of ours (it would mean ~16k symbol names).
_MAX_HEADER = 1 << 20
# Records checked per step when validating a file (bounded memory on large files).
_VALIDATE_CHUNK = 1 << 16


class TickFileError(ValueError):
    """A tick file that cannot be read as one; the message names the file and offset."""


def _dtype_description(dtype: np.dtype) -> dict[str, Any]:
    fields = dtype.fields or {}
    return {
        "names": list(dtype.names or ()),
        "formats": [fields[n][0].str for n in dtype.names or ()],
        "offsets": [fields[n][1] for n in dtype.names or ()],
        "itemsize": dtype.itemsize,
    }


@dataclass(frozen=True)
class TickFileHeader:
    """The decoded header of a tick file."""

    version: int
    header_len: int
    symbols: tuple[str, ...]
    created_ns: int


def _encode_header(symbols: Sequence[str]) -> bytes:
    body = orjson.dumps(
        {"dtype": _dtype_description(TICK), "symbols": list(symbols), "created_ns": time.time_ns()}
    )
    header_len = -(-(_PREFIX.size + len(body)) // _ALIGN) * _ALIGN
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, header_len)
    return (prefix + body).ljust(header_len, b"\x00")


def _decode_header(path: Path, f: BinaryIO) -> TickFileHeader:
    raw = f.read(_PREFIX.size)
    if len(raw) < _PREFIX.size:
        raise TickFileError(f"{path}: offset 0: file too short for a tick file header")
    magic, version, header_len = _PREFIX.unpack(raw)
    if magic != MAGIC:
        raise TickFileError(f"{path}: offset 0: bad magic {magic!r}, not a dynamind tick file")
    if version != FORMAT_VERSION:
        raise TickFileError(
            f"{path}: offset 8: format version {version}, this build reads {FORMAT_VERSION}"
        )
    if header_len % _ALIGN or not _PREFIX.size < header_len <= _MAX_HEADER:
        raise TickFileError(f"{path}: offset 12: implausible header length {header_len}")
    body = f.read(header_len - _PREFIX.size)
    if len(body) < header_len - _PREFIX.size:
        raise TickFileError(f"{path}: offset {_PREFIX.size}: header cut short")
    try:
        meta = orjson.loads(body.rstrip(b"\x00"))
        dtype = np.dtype(meta["dtype"])
        symbols = tuple(str(s) for s in meta["symbols"])
        created_ns = int(meta["created_ns"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise TickFileError(f"{path}: offset {_PREFIX.size}: unreadable header: {exc}") from None
    if dtype != TICK:
        raise TickFileError(
            f"{path}: offset {_PREFIX.size}: record dtype {meta['dtype']} does not match "
            f"this build's TICK {_dtype_description(TICK)}"
        )
    return TickFileHeader(version, header_len, symbols, created_ns)


def read_header(path: str | os.PathLike[str]) -> TickFileHeader:
    """The header of the tick file at ``path`` (no records are read)."""
    path = Path(path)
    with path.open("rb") as f:
        return _decode_header(path, f)


class TickFileWriter:
    """Appends TICK records to a tick file.

    A new file gets a header naming ``symbols``. An existing file is appended to when its
    symbols match; a partial or zero-filled tail a crash left is cut off first (its size
    in bytes is ``dropped_bytes``). ``flush`` hands buffered records to the OS and, with
    ``fsync``, to the disk.
    """

    def __init__(
        self, path: str | os.PathLike[str], symbols: Sequence[str], *, fsync: bool = False
    ) -> None:
        self.path = Path(path)
        self.symbols = tuple(symbols)
        self.fsync = fsync
        self.dropped_bytes = 0
        if self.path.exists() and self.path.stat().st_size > 0:
            self._open_existing()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("wb", buffering=1 << 20)
            self._file.write(_encode_header(self.symbols))
            self.flush()
            self.records = 0

    def _open_existing(self) -> None:
        header = read_header(self.path)
        if header.symbols != self.symbols:
            raise TickFileError(
                f"{self.path}: offset {_PREFIX.size}: file has symbols {list(header.symbols)}, "
                f"cannot append records for {list(self.symbols)}"
            )
        size = self.path.stat().st_size
        whole = (size - header.header_len) // TICK.itemsize
        valid = whole
        if whole:
            # Walk back over a zero-filled tail (kind 0 is never written), a chunk at a
            # time so that a large file costs no large temporary arrays.
            records = np.memmap(
                self.path, dtype=TICK, mode="r", offset=header.header_len, shape=(whole,)
            )
            while valid > 0:
                low = max(0, valid - _VALIDATE_CHUNK)
                written = np.flatnonzero(records["kind"][low:valid])
                if len(written):
                    valid = low + int(written[-1]) + 1
                    break
                valid = low
            del records
        end = header.header_len + valid * TICK.itemsize
        self.dropped_bytes = size - end
        self._file = self.path.open("r+b", buffering=1 << 20)
        self._file.truncate(end)
        self._file.seek(end)
        self.records = valid

    def append(self, records: np.ndarray) -> None:
        """Append TICK records (copied; ``records`` may be a view of a shared ring)."""
        if records.dtype != TICK:
            raise ValueError(f"expected TICK records, got {records.dtype}")
        self._file.write(np.ascontiguousarray(records).data)
        self.records += len(records)

    def flush(self) -> None:
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()

    def __enter__(self) -> TickFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TickFileReader:
    """A tick file mapped read-only; ``records`` is a zero-copy TICK array over it.

    Opening checks the header and, unless ``validate`` is false, every record: a length
    that is not a whole number of records, or a record with an impossible kind, side or
    symbol index, or a zero timestamp, is a TickFileError naming the byte offset.
    """

    def __init__(self, path: str | os.PathLike[str], *, validate: bool = True) -> None:
        self.path = Path(path)
        self.header = read_header(self.path)
        size = self.path.stat().st_size
        data = size - self.header.header_len
        n, partial = divmod(data, TICK.itemsize)
        if partial:
            raise TickFileError(
                f"{self.path}: offset {self.header.header_len + n * TICK.itemsize}: "
                f"truncated record ({partial} of {TICK.itemsize} bytes)"
            )
        if n:
            self.records = np.memmap(
                self.path, dtype=TICK, mode="r", offset=self.header.header_len, shape=(n,)
            )
        else:
            # mmap cannot map zero bytes.
            self.records = np.empty(0, dtype=TICK)
        if validate:
            self._validate()

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.header.symbols

    def __len__(self) -> int:
        return len(self.records)

    def offset_of(self, index: int) -> int:
        """Byte offset of record ``index`` in the file."""
        return self.header.header_len + index * TICK.itemsize

    def count(self) -> int:
        return len(self.records)

    def chunks(self) -> Iterator[np.ndarray]:
        """The whole file as one zero-copy array (the replay feed's source protocol)."""
        yield self.records

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """Consecutive views of at most ``size`` records."""
        for start in range(0, len(self.records), size):
            yield self.records[start : start + size]

    def _validate(self) -> None:
        n_symbols = len(self.symbols)
        for start in range(0, len(self.records), _VALIDATE_CHUNK):
            chunk = self.records[start : start + _VALIDATE_CHUNK]
            kind = chunk["kind"]
            side = chunk["side"]
            bad = (
                ((kind != TickKind.QUOTE) & (kind != TickKind.TRADE))
                | (side < Side.SELL)
                | (side > Side.BUY)
                | (chunk["symbol"] >= n_symbols)
                | (chunk["ts_ns"] <= 0)
            )
            if bad.any():
                i = start + int(np.argmax(bad))
                rec = self.records[i]
                raise TickFileError(
                    f"{self.path}: offset {self.offset_of(i)}: corrupt record {i} "
                    f"(kind={rec['kind']}, side={rec['side']}, symbol={rec['symbol']}, "
                    f"ts_ns={rec['ts_ns']})"
                )
