"""The scheduled jobs end to end through papermill on a short window of the embedded data: outputs, immutability,
failure reporting, determinism."""
import json
import os
import stat

import pandas as pd
import pytest

from trading_lib.cli import main
from trading_lib.jobs import JobFailed, run_job

SMALL = dict(symbols=["AAPL", "MSFT", "JPM", "XOM", "KO", "PFE"], start="2000-01-01", end="2012-12-31",
             test_start="2010-01-01", lstm_epochs=1, lgbm_n_estimators=40)


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("proj")
    import shutil

    from conftest import ROOT
    shutil.copy(ROOT / "settings.ini", root / "settings.ini"); shutil.copytree(ROOT / "scheduled", root / "scheduled")
    a = run_job("train", dict(SMALL), root=root, progress=False)
    b = run_job("train", dict(SMALL), root=root, progress=False)
    yield root, a, b
    from trading_lib.live.state import stop_embedded
    stop_embedded(root / "runs" / "live" / "redis", force=True)  # the replays' embedded Redis outlives them by design


def test_train_outputs_and_determinism(train_runs):
    root, a, b = train_runs
    assert a != b and a.parent == b.parent == root / "runs" / "train"  # a rerun never overwrites
    for d in (a, b):
        assert {"train.ipynb", "forecasts.parquet", "metrics.json"} <= {p.name for p in d.iterdir()}
        assert not os.stat(d / "metrics.json").st_mode & stat.S_IWUSR  # outputs are made read-only
    fa, fb = pd.read_parquet(a / "forecasts.parquet"), pd.read_parquet(b / "forecasts.parquet")
    pd.testing.assert_frame_equal(fa, fb)  # same seed, same data -> identical forecasts
    assert set(fa.columns) == {"timestamp", "symbol", "horizon", "prediction", "confidence", "model"}
    assert fa["timestamp"].min() >= pd.Timestamp("2010-01-01", tz="UTC")  # out-of-sample only
    assert set(fa["model"]) == {"lightgbm", "lstm"} and set(fa["horizon"]) == {1, 5, 20, 60}
    assert fa["confidence"].between(0, 1).all() and fa["prediction"].notna().all()
    ma, mb = json.loads((a / "metrics.json").read_text()), json.loads((b / "metrics.json").read_text())
    assert ma["forecast_quality"] == mb["forecast_quality"]
    assert ma["run"]["data_hash"] == mb["run"]["data_hash"] and len(ma["run"]["data_hash"]) == 64
    assert ma["run"]["seed"] == 42 and ma["run"]["device"] == "cpu"
    assert ma["folds"][0]["test_start"] == "2010-01-04"
    # the LSTM is the mean of 3 seeds by default; the summary shows each seed's own spread
    sp = pd.DataFrame(ma["seed_spread"])
    assert sorted(sp["seed"]) == [42, 43, 44] and set(sp["model"]) == {"lstm"}
    assert sp["ic_h20"].nunique() == 3 and sp["sharpe"].notna().all()  # the seeds really differ
    summary = (a / "summary.txt").read_text()
    assert "lstm (mean of 3 seeds: 42, 43, 44)" in summary and "Spread across seeds" in summary
    assert "Out-of-sample IC by model" in summary and "Seconds per stage" in summary


def test_backtest_outputs(train_runs):
    root, a, _ = train_runs
    d = run_job("backtest", dict(forecasts_from=str(a), top_k=3, null_panels=20), root=root, progress=False)
    m = json.loads((d / "metrics.json").read_text())
    assert {"strategy", "1/N", "S&P 500", "model:lightgbm", "model:lstm", "baseline:momentum_12_1", "baseline:inverse_vol"} <= set(m["performance"])
    # the settings the forecasts were made with come from the train run; every trial lands in the project's ledger
    assert m["run"]["forecast_settings"]["source"] == str(a) and m["run"]["forecast_settings"]["walk_forward"]["test_start"] == "2010-01-01"
    ledger = [json.loads(x) for x in (root / "research" / "trials.jsonl").read_text().splitlines()]
    assert {r["name"] for r in ledger} >= {"strategy", "model:lightgbm", "model:lstm"} and m["overfitting"]["n_trials"] >= 3
    assert m["random_null"]["n"] == 20 and 0 <= m["random_null"]["percentile"] <= 100
    assert set(m["significance"]) >= {"vs_equal_weight", "vs_zero", "ic", "yearly_ic"}
    assert "strategy" in m["tracking"]["by_run"] and "Against 1/N" in (d / "summary.txt").read_text()
    for k in ("cagr", "ann_vol", "sharpe", "sortino", "max_drawdown", "calmar", "turnover", "hit_rate"):
        assert k in m["performance"]["strategy"]
    assert m["performance"]["strategy"]["n_orders"] > 0 and m["performance"]["strategy"]["max_drawdown"] < 0
    o = m["overfitting"]
    assert 0 <= o["probabilistic_sharpe_ratio"] <= 1 and o["deflated_sharpe_ratio"] <= o["probabilistic_sharpe_ratio"] + 1e-12
    assert o["n_trials"] >= 3
    assert {r["model"] for r in m["forecast_quality"]} == {"lightgbm", "lstm"}
    assert m["run"]["parameters"]["top_k"] == 3 and m["run"]["settings"]["portfolio"]["top_k"] == 3
    assert m["run"]["settings"]["universe"]["symbols"] == SMALL["symbols"]  # inherited from the train run
    assert {"tearsheet.png", "tearsheet.html", "equity.parquet", "summary.txt", "backtest.ipynb"} <= {p.name for p in d.iterdir()}
    eq = pd.read_parquet(d / "equity.parquet")
    assert eq.index[0] >= pd.Timestamp("2010-01-01", tz="UTC") and eq.notna().all().all()
    # the S&P 500 benchmark is buy-and-hold of the index: its equity is proportional to the index closes
    from trading_lib.data.sources import EmbeddedSource
    spx = EmbeddedSource().series("SP500").reindex(eq.index)
    ratio = eq["S&P 500"] / spx
    assert (ratio / ratio.iloc[0] - 1).abs().max() < 1e-9


def test_failing_cell_is_named(project_copy, capsys):
    with pytest.raises(JobFailed) as e:  # (an unknown model no longer gets this far: it is refused before the kernel starts)
        run_job("train", dict(SMALL, symbols=["NO_SUCH_SYMBOL"]), root=project_copy, progress=False)
    assert "failed in cell" in str(e.value) and "NO_SUCH_SYMBOL" in str(e.value)
    assert (e.value.run_dir / "train.ipynb").exists() and (e.value.run_dir / "error.json").exists()


def test_cli_exit_codes(project_copy, monkeypatch):
    monkeypatch.chdir(project_copy)
    assert main(["run", "nope"]) == 2
    assert main(["run", "train", "-p", "alpaca_secret_key", "x"]) == 2
    assert main(["run", "train", "-p", "models", "[no_such_model]", "-p", "symbols", "[AAPL]", "--no-progress"]) == 2  # refused before the kernel
    assert main(["run", "train", "-p", "symbols", "[NO_SUCH_SYMBOL]", "--no-progress"]) == 1  # a failing cell


def test_default_replay_trades_and_asks_a_supervisor_about_a_minority(train_runs, monkeypatch, capsys):
    """The live job exactly as the README runs it (no approval parameters): it fills orders, asks for approval on a
    minority of them, expires what is still pending when the run ends, and prints its summary."""
    root, a, _ = train_runs
    monkeypatch.setenv("TRADING_METRICS__PORT", "0")
    d = run_job("live", dict(forecasts_from=str(a), start="2011-01-01"), root=root, progress=False)
    out = (d / "summary.txt").read_text()
    m = json.loads((d / "metrics.json").read_text())
    act = m["activity"]
    assert act["fills"] > 20 and act["orders"] > 20
    assert act["approval_requests"] / act["orders"] < 0.25, act   # "high risk" is a minority of orders
    orders = pd.read_parquet(d / "orders.parquet")
    assert act["approvals"]["pending"] == 0 and not (orders["state"] == "pending_approval").any()  # expired at the end
    assert "filled" in out and "FILLED NOTHING" not in out and f"Live run {m['run']['run_id']}" in out


def test_auto_approvals_are_refused_outside_a_replay(train_runs, monkeypatch, capsys):
    root, a, _ = train_runs
    monkeypatch.setenv("TRADING_METRICS__PORT", "0")
    with pytest.raises(JobFailed) as e:
        run_job("live", dict(forecasts_from=str(a), mode="paper", approvals="auto"), root=root, progress=False)
    assert "refused in paper mode" in str(e.value)


def test_unattended_replay_with_auto_approvals(train_runs, monkeypatch):
    root, a, _ = train_runs
    monkeypatch.setenv("TRADING_METRICS__PORT", "0")
    monkeypatch.chdir(root)  # an earlier replay of this project may have HALTED it (the state outlives runs): release it
    assert main(["trading-state", "release", "--reason", "test: unattended replay", "--as", "tester"]) in (0, 1)
    d = run_job("live", dict(forecasts_from=str(a), start="2012-01-01", approvals="auto", approval_max_weight_change=0.01,
                             run_id="auto-1"), root=root, progress=False)
    m = json.loads((d / "metrics.json").read_text())
    assert m["activity"]["auto_approved"] == m["activity"]["approval_requests"] > 0
    assert m["activity"]["approvals"]["pending"] == 0 and m["activity"]["fills"] > 0
    from trading_lib.live.audit import Ledger
    led = Ledger(root / "runs" / "live" / "ledger.sqlite")
    assert any(r.payload.get("by") == "replay:auto" for r in led.records(kind="approval"))
