"""Log lines: one event, one line, in text mode too; figures as JSON fields."""

from __future__ import annotations

import logging

import orjson

from appliance.runtime.logs import JsonFormatter, TextFormatter


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nworse")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    rec = logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_text_logs_put_a_multi_line_event_on_one_line():
    line = TextFormatter().format(
        _record("reload rejected:\n%s", "f.toml: a: bad\nf.toml: b: worse", exc=True)
    )
    assert "\n" not in line
    assert "reload rejected: | f.toml: a: bad | f.toml: b: worse" in line
    assert "Traceback (most recent call last): |" in line and "ValueError: bad | worse" in line


def test_json_logs_carry_figures_as_numbers():
    doc = orjson.loads(JsonFormatter().format(_record("status", ticks_per_s=20000, pnl_net=-1.5)))
    assert doc["msg"] == "status" and doc["ticks_per_s"] == 20000 and doc["pnl_net"] == -1.5
