"""`dynamind backtest` on the real Binance.US captures: determinism, report, figures."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appliance.ops import backtest, report
from appliance.ops.cli import main
from appliance.trading.journal_read import JournalReader
from appliance.trading.metrics import TradingMetrics

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config/examples/backtest.toml"
DATA = ROOT / "tests/data/binance-us"


def journal_rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, in a fixed order: what "identical journal" means."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [t for (t,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )]  # fmt: skip
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}
    finally:
        db.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bt")
    return backtest.run(CONFIG, DATA, out)


def test_same_data_config_and_seed_give_the_same_journal(run, tmp_path):
    again = backtest.run(CONFIG, DATA, tmp_path / "again")
    first, second = journal_rows(run.journal), journal_rows(again.journal)
    assert sum(len(v) for v in first.values()) > 500
    assert first == second
    s1 = json.loads((run.out / "summary.json").read_text())
    s2 = json.loads((again.out / "summary.json").read_text())
    for key in ("overall", "populations", "best_agents", "worst_agents"):
        assert s1[key] == s2[key]
    other = backtest.run(CONFIG, DATA, tmp_path / "other", seed=12)  # other agents
    assert journal_rows(other.journal)["orders"] != first["orders"]


def test_journal_times_come_from_the_data(run):
    db = sqlite3.connect(f"file:{run.journal}?mode=ro", uri=True)
    lo, hi = db.execute("SELECT MIN(created_ns), MAX(updated_ns) FROM orders").fetchone()
    fills = db.execute("SELECT MIN(ts_ns), MAX(ts_ns) FROM fills").fetchone()
    (started,) = db.execute("SELECT started_ns FROM runs").fetchone()
    db.close()
    assert run.first_ns == started <= lo and hi <= run.last_ns
    assert run.first_ns <= fills[0] and fills[1] <= run.last_ns
    assert run.first_ns == round(1633998276.480073 * 1e9)  # the capture's first tick


def test_summary_figures_match_the_journal(run):
    s = json.loads((run.out / "summary.json").read_text())
    db = sqlite3.connect(f"file:{run.journal}?mode=ro", uri=True)
    fees, turnover, n_fills = db.execute(
        "SELECT SUM(fee), SUM(qty * price), count(*) FROM fills"
    ).fetchone()
    orders, filled, rejected = db.execute(
        "SELECT count(*), SUM(filled_qty > 0), SUM(state = 7) FROM orders"
    ).fetchone()
    per_pop = dict(db.execute(
        "SELECT o.host, SUM(f.fee) FROM fills f JOIN orders o USING (client_order_id) "
        "GROUP BY o.host"
    ).fetchall())  # fmt: skip
    db.close()
    o = s["overall"]
    assert n_fills > 100 and o["orders"] == orders == s["intents"]
    assert o["fees"] == pytest.approx(fees, rel=1e-12)
    assert o["turnover"] == pytest.approx(turnover, rel=1e-12)
    assert o["orders_filled"] == filled and o["rejects"] == rejected
    assert o["fill_rate_orders"] == pytest.approx(filled / orders)
    assert [p["fees"] for p in s["populations"]] == pytest.approx([per_pop[0], per_pop[1]])
    assert o["net"] == pytest.approx(o["realized"] + o["unrealized"] - o["fees"])
    # The realised PnL the journal's fills give, through the same ledger, is the same.
    with JournalReader(run.journal) as j:
        offline = TradingMetrics(run.metrics.universe)
        offline.replay_journal(j.orders(), j.fills())
    assert offline.figures("overall")["realized"][0] == pytest.approx(o["realized"], abs=1e-9)
    best, worst = s["best_agents"][0], s["worst_agents"][0]
    assert best["net"] >= worst["net"]
    assert set(best["params"]) == {"fast", "slow"}
    assert 2 <= best["params"]["fast"] <= 8
    assert s["overall"]["samples"] >= 28  # ~29 s of data at 1 s


@pytest.mark.parametrize("name", sorted(report.PLOTS))
def test_plots_decode_have_their_size_and_are_not_blank(run, name):
    file, (w, h) = report.PLOTS[name]
    with Image.open(run.out / file) as img:
        assert img.size == (round(w * report.DPI), round(h * report.DPI))
        pixels = np.asarray(img.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 20, "a blank or near-blank picture"
    assert (pixels.std(axis=(0, 1)) > 5).all()


def test_report_files_are_as_private_as_the_journal(run):
    files = sorted(p.name for p in run.out.iterdir() if p.is_file())
    assert "summary.json" in files and "index.html" in files and "equity.png" in files
    for name in files:
        if not name.endswith(("-wal", "-shm")):
            assert stat.S_IMODE((run.out / name).stat().st_mode) == 0o640, name


def test_html_page_ties_them_together(run):
    page = (run.out / "index.html").read_text()
    for file, _ in report.PLOTS.values():
        assert f'src="{file}"' in page
    assert "Best agents" in page and "momentum.0:ema_cross" in page


def test_cli_runs_and_reports_bad_input(tmp_path, capsys):
    assert main(["backtest", "-c", str(CONFIG), "--data", str(DATA), "--out",
                 str(tmp_path / "cli"), "--from", "1633998290", "--quiet"]) == 0  # fmt: skip
    s = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert s["from"] >= "2021-10-12T00:24:50" and 0 < s["ticks"] < 139
    assert main(["backtest", "-c", str(CONFIG), "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["backtest", "-c", str(ROOT / "config/dynamind.toml"), "--data", str(DATA),
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "not in the config's symbols" in capsys.readouterr().err
    assert main(["backtest", "-c", str(CONFIG), "--data", str(DATA), "--out",
                 str(tmp_path / "y"), "--from", "2030-01-01"]) == 2  # fmt: skip
    assert "no ticks" in capsys.readouterr().err


def test_an_unwritable_report_folder_is_refused_before_the_run(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "report"  # a file where a folder must be: even root fails
    assert main(["backtest", "-c", str(CONFIG), "--data", str(DATA), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"backtest: --out {out}: cannot write the report there"), err
