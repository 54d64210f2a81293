"""Logging for every dynamind process: one line per event on stderr, text or JSON."""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson

# What a newline inside one event becomes in text logs.
ONE_LINE = " | "
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class TextFormatter(logging.Formatter):
    """``2026-11-25T11:40:00.123Z INFO  feed[1234] message key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ms = int(record.msecs)
        extra = " ".join(f"{k}={_short(v)}" for k, v in _extras(record).items())
        line = (
            f"{ts}.{ms:03d}Z {record.levelname:<5} {_process_name()}[{record.process}] "
            f"{record.getMessage()}"
        )
        if extra:
            line += " " + extra
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        # One event, one line, whatever it carries (config errors, tracebacks): journald,
        # grep and log shippers all split on newlines.
        return ONE_LINE.join(part for part in line.splitlines() if part.strip())


class JsonFormatter(logging.Formatter):
    """One JSON object per line (orjson), for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": record.created,
            "level": record.levelname,
            "process": _process_name(),
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def _short(value: object, limit: int = 120) -> str:
    # Text logs stay one readable line; the JSON format carries values whole.
    text = str(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} items)" if isinstance(value, list | dict) else ""
    return text[:limit] + "..." + size


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED}


def _process_name() -> str:
    return os.environ.get("DYNAMIND_PROCESS", "dynamind")


def setup(fmt: str = "text", level: int | None = None, process: str | None = None) -> None:
    """Configure the root logger of this process (idempotent).

    The level defaults to $DYNAMIND_LOG_LEVEL (inherited by workers), else INFO.
    """
    if level is None:
        level = logging.getLevelName(os.environ.get("DYNAMIND_LOG_LEVEL", "INFO").upper())
    if process is not None:
        os.environ["DYNAMIND_PROCESS"] = process
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
