"""The `dynamind` command line as an operator meets it: help, version, check-config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.ops.cli import build_parser
from appliance.runtime.exits import MEANING, Exit
from tests.harness import dynamind

ROOT = Path(__file__).resolve().parents[2]


def test_version():
    res = dynamind("--version")
    assert res.returncode == 0 and res.stdout.startswith("dynamind 0."), res.stdout


def test_exit_codes_are_one_per_meaning():
    assert len({int(c) for c in Exit}) == len(Exit) == len(MEANING)
    assert len(set(MEANING.values())) == len(MEANING)


def _subcommands() -> dict[str, object]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_option_has_help_with_its_default_and_the_exit_codes(name):
    sub = _subcommands()[name]
    for action in sub._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{name} {action.option_strings or action.dest}: no help"
    text = sub.format_help()
    assert "exit codes:" in text and "  0  " in text
    for action in sub._actions:
        if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
            assert "(default:" in text, f"{name}: defaults not shown"


def test_main_help_lists_every_exit_code():
    text = build_parser().format_help()
    for code, meaning in MEANING.items():
        assert f"{int(code):>3}  {meaning}" in text


def test_readme_exit_codes_are_the_real_ones():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    table = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert table == {int(c) for c in Exit}
    # every "(exit N)" in the prose names the code that meaning has
    assert re.findall(r"refuses to start \(exit (\d+)\) when `/dev/shm`", readme) == [
        str(int(Exit.NO_SHM_SPACE))
    ]


def test_check_config_takes_c_and_the_same_default(tmp_path):
    cfg = ROOT / "config" / "dynamind.toml"
    assert dynamind("check-config", "-c", str(cfg)).returncode == 0
    assert dynamind("check-config", str(cfg)).returncode == 0
    # the default is the same file the other commands use: ./config/dynamind.toml
    res = dynamind("check-config", cwd=ROOT)
    assert res.returncode == 0 and res.stdout.startswith("config/dynamind.toml: ok")
    assert "config/dynamind.toml" in dynamind("status", "--help").stdout


def _config(tmp_path: Path, **edits: str) -> Path:
    text = (ROOT / "config" / "dynamind.toml").read_text()
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_check_config_warns_about_configs_that_cannot_trade(tmp_path):
    path = _config(
        tmp_path,
        **{
            "max_order_notional = 5000.0": "max_order_notional = 10.0",
            'state = "active"': 'state = "halted"',
        },
    )
    res = dynamind("check-config", "-c", str(path))
    assert res.returncode == 0, res.stderr
    assert "warning: trading.state: 'halted'" in res.stdout
    assert "above max_order_notional 10" in res.stdout and "MAX_NOTIONAL" in res.stdout
    plain = dynamind("check-config", "-c", str(ROOT / "config" / "dynamind.toml"))
    assert "warning" not in plain.stdout


def test_invalid_config_has_one_exit_code_and_plain_words(tmp_path):
    path = _config(tmp_path, **{"\nqty = ": "\nqty = -1 #"})  # the agents' qty
    res = dynamind("check-config", "-c", str(path))
    assert res.returncode == Exit.CONFIG
    assert "constrained" not in res.stderr
    assert "as a number: Input should be greater than 0" in res.stderr
    run = dynamind("run", "-c", str(path), "--duration", "1", cwd=tmp_path)
    assert run.returncode == Exit.CONFIG and "nothing started" in run.stderr
