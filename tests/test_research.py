"""Research you can trust (issue 11), on short windows of the embedded data: a noise placebo (random features give
IC ≈ 0 and no significance against 1/N), the book follows its targets when order limits scale with equity, the trial
ledger counts every configuration and compared method, and top-k ties are broken neutrally."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from trading_lib.config import load_settings
from trading_lib.data.sources import EmbeddedSource, to_panel
from trading_lib.features import make_labels
from trading_lib.portfolio.weights import TieWarning, topk_weights
from trading_lib.research.backtest import (
    evaluate,
    forecast_settings_from_run,
    load_trials,
    momentum_scores,
    select_headline,
    summary_table,
    tracking_gap,
    walk_forward,
)
from trading_lib.trading.engine import run_backtest
from trading_lib.trading.strategy import ScoreStrategy, ensemble_scores

SYMS = ["AAPL", "AMD", "BAC", "BBY", "CVX", "JPM", "KO", "MSFT", "PFE", "XOM"]


def _settings(**kw):
    return load_settings(environ={}).replace(models__names=["lightgbm"], models__lgbm_n_estimators=40, models__horizons=[1, 5, 20],
                                             walk_forward__test_start="2009-01-01", walk_forward__embargo_days=20, **kw)


@pytest.fixture(scope="module")
def placebo():
    "LightGBM fitted on pure-noise features (same index as real ones), with real labels, walk-forward 2009–2011."
    s = _settings()
    src = EmbeddedSource()
    bars = src.bars(SYMS, "2005-01-01", "2011-12-31")
    bench = src.series("SP500")
    labels = make_labels(bars, s.models.horizons)
    rng = np.random.default_rng(0)
    feats = pd.DataFrame(rng.standard_normal((len(labels), 6)), index=labels.index, columns=[f"noise{i}" for i in range(6)])
    wf = walk_forward(feats, labels, s, progress=False)
    close = to_panel(bars, "close")
    bench = bench.reindex(close.index)
    return s, close, bench, wf.forecasts, labels


def test_noise_placebo_has_no_skill(placebo, tmp_path):
    s, close, bench, fc, labels = placebo
    with pytest.warns(TieWarning, match="fewer than k \\+ 1 = 6 distinct values"):  # LightGBM on noise is flat: ties are reported
        m, eq = evaluate(close, bench, fc, labels, s, data_hash="placebo", ledger=tmp_path / "trials.jsonl", null_panels=30, risk=False)
    assert 0 < m["ties"]["strategy"] < 1  # share of decision dates with a tie at the top-k boundary (shared neutrally)
    ic = pd.DataFrame(m["significance"]["ic"]).set_index(["model", "horizon"])
    assert (ic["ic"].abs() < 0.03).all() and (ic["ic_t_nw"].abs() < 2.5).all(), ic
    assert (ic.loc[("lightgbm", 20), "lags"]) >= 20
    a = m["significance"]["vs_equal_weight"]
    assert a["dsr"] < 0.95 and a["psr"] < 0.95 and abs(a["sharpe_difference_z"]) < 2, a
    assert m["significance"]["vs_zero"]["label"].startswith("raw returns")
    assert 5 <= m["random_null"]["percentile"] <= 95  # no information: inside the null distribution
    assert {"baseline:momentum_12_1", "baseline:inverse_vol", "1/N", "S&P 500"} <= set(eq.columns)
    yi = pd.DataFrame(m["significance"]["yearly_ic"])
    assert set(yi["year"]) == {2009, 2010, 2011}
    text = summary_table(m)
    assert "Against 1/N" in text and "Random-score null" in text and "Tracking gap of the strategy" in text


def test_held_weights_track_targets_when_limits_scale_with_equity():
    "A $5M book with 25% positions: a fixed $500k order limit leaves it far from its targets; 0.35 × equity does not."
    src = EmbeddedSource()
    close = to_panel(src.bars(SYMS, "2008-01-01", "2011-12-31"), "close")
    base = load_settings(environ={}).replace(execution__initial_cash=5_000_000.0, portfolio__top_k=4)
    sess = close.index[close.index >= pd.Timestamp("2009-01-01", tz="UTC")]
    sc = momentum_scores(close).reindex(sess)
    C = close.reindex(sess)
    W = run_backtest(C, ScoreStrategy(sc, base), base).targets  # the strategy's targets (NaN rows: no decision)
    fixed = run_backtest(C, W, base.replace(risk__max_order_fraction=None, risk__max_order_notional=500_000.0))
    scaled = run_backtest(C, W, base.replace(risk__max_order_fraction=0.35))
    g_fixed, g_scaled = tracking_gap(fixed.weights, W), tracking_gap(scaled.weights, W)
    assert fixed.refusals.get("MAX_ORDER_NOTIONAL", 0) > 0 and g_fixed["flagged"] and g_fixed["mean"] > 0.2, g_fixed
    assert "MAX_ORDER_NOTIONAL" not in scaled.refusals, scaled.refusals
    assert not g_scaled["flagged"] and g_scaled["mean"] < 0.03, g_scaled
    assert all(v < 0.05 for v in g_scaled["by_year"].values())


def test_trial_ledger_counts_configurations_and_methods(placebo, tmp_path):
    s, close, bench, fc, labels = placebo
    led = tmp_path / "research" / "trials.jsonl"
    run = lambda st, **kw: evaluate(close, bench, fc, labels, st, data_hash="placebo", ledger=led, null_panels=0,
                                    baselines=False, risk=False, **kw)[0]
    m1 = run(s)
    # one model: the strategy and model:lightgbm are the same configuration, hence one trial
    assert m1["significance"]["vs_equal_weight"]["n_trials"] == 1
    assert run(s)["significance"]["vs_equal_weight"]["n_trials"] == 1  # the same configuration again: no new trial
    m3 = run(s.replace(portfolio__top_k=3))  # a second configuration
    assert m3["significance"]["vs_equal_weight"]["n_trials"] == 2
    m4 = run(s, methods=["rank"])  # compare_methods: each method is a trial
    assert m4["significance"]["vs_equal_weight"]["n_trials"] == 3
    assert m4["overfitting"]["n_trials"] == 3 and m4["overfitting"]["var_trials_sharpe"] > 0
    lines = [json.loads(x) for x in led.read_text().splitlines()]
    assert len(lines) == 9 and {r["name"] for r in lines} == {"strategy", "model:lightgbm", "method:rank"}
    assert all({"active_sharpe", "active_mean_ann", "n_days"} <= set(r["summary"]) for r in lines)
    # the forecasts' own settings are part of the hash: a different seed in the train run is another trial
    train = tmp_path / "train"; train.mkdir()
    (train / "metrics.json").write_text(json.dumps({"run": {"code_version": "x", "settings": s.replace(models__seed=7).model_dump(mode="json")}}))
    fs = forecast_settings_from_run(train)
    assert fs["models"]["seed"] == 7 and fs["source"] == str(train)
    m5 = run(s, forecast_settings=fs)
    assert m5["run"]["forecast_settings"]["models"]["seed"] == 7
    assert m5["significance"]["vs_equal_weight"]["n_trials"] == 4 and len(load_trials(led, "placebo")) == 4


def test_headline_is_chosen_on_the_selection_period_only(placebo, tmp_path):
    """The choice among candidates reads no session after selection_end: prices changed after it leave the choice and
    every candidate's selection-period statistics identical (its held-out ones change); each candidate is a ledger
    trial and exactly one is marked chosen; the strategy run of `evaluate` is then that choice."""
    s, close, bench, fc, labels = placebo
    s = s.replace(research__selection_end="2010-06-30", research__constructions=["topk", "tilt"])
    led = tmp_path / "trials.jsonl"
    a = select_headline(close, fc, s, "placebo", ledger=led)
    cut = close.index > pd.Timestamp("2010-06-30", tz="UTC")
    shock = np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.02, close.shape) * cut[:, None], axis=0))
    b = select_headline(close * shock, fc, s, "placebo")
    assert [c["name"] for c in a["candidates"]] == ["lightgbm|topk", "lightgbm|tilt"] and a["chosen"] == b["chosen"]
    for ca, cb in zip(a["candidates"], b["candidates"]):
        assert ca["selection"] == cb["selection"] and ca["held_out"] != cb["held_out"]
        assert ca["selection"]["n_days"] > 300 and ca["held_out"]["n_days"] > 300
    lines = [json.loads(x) for x in led.read_text().splitlines()]
    assert [r["name"] for r in lines] == ["lightgbm|topk", "lightgbm|tilt"] and sum(r["selection"]["chosen"] for r in lines) == 1
    # held out (the full period starts with a month in which the monthly 1/N book is still in cash): the tilt keeps
    # close to its 3 % active-risk budget, far below top-k's
    tilt = next(c for c in a["candidates"] if c["method"] == "tilt")["held_out"]
    topk = next(c for c in a["candidates"] if c["method"] == "topk")["held_out"]
    assert 0.015 < tilt["tracking_error"] < 0.05 and tilt["tracking_error"] < topk["tracking_error"] / 2, (tilt, topk)
    m, _ = evaluate(close, bench, fc, labels, s.replace(portfolio__method=a["chosen_method"]), data_hash="placebo", ledger=led,
                    null_panels=0, baselines=False, risk=False, strategy_models=a["chosen_models"])
    chosen = next(c for c in a["candidates"] if c["name"] == a["chosen"])
    assert abs(m["performance"]["strategy"]["sharpe"] - chosen["full"]["sharpe"]) < 1e-9   # the same book
    assert m["significance"]["vs_equal_weight"]["n_trials"] == 2   # the strategy run is the chosen candidate's trial


def test_topk_ties_are_neutral():
    "Flat forecasts: every tied symbol is held equally often (the old rule favoured the first columns: AAPL, AMD, ...)."
    rng = np.random.default_rng(3)
    sess = pd.bdate_range("2015-01-02", periods=1000, tz="UTC")
    flat = pd.DataFrame(rng.integers(0, 2, size=(len(sess), len(SYMS))).astype(float), index=sess, columns=SYMS)
    s = load_settings(environ={}).replace(portfolio__rebalance="D", portfolio__top_k=5, portfolio__max_weight=1.0)
    with pytest.warns(TieWarning, match="fewer than k \\+ 1 = 6 distinct"):
        W = run_backtest(pd.DataFrame(100.0, index=sess, columns=SYMS), ScoreStrategy(flat, s), s).targets
    share = W.mean()
    assert share.max() - share.min() < 0.01, share  # ≈ 0.1 each
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TieWarning)
        chosen = (topk_weights(flat.to_numpy(), 5, ties="random", seed=1) > 0).mean(axis=0)
    assert chosen.max() - chosen.min() < 0.06, chosen
    # an all-equal forecast through the score matrix: no symbol is favoured
    fc = pd.DataFrame({"timestamp": np.repeat(sess[:50], len(SYMS)), "symbol": np.tile(SYMS, 50), "horizon": 20,
                       "prediction": 0.01, "confidence": 0.5, "model": "flat"})
    sc = pd.DataFrame(ensemble_scores(fc, 20, sess[:50], SYMS)[0], index=sess[:50], columns=SYMS).fillna(0.0)
    with pytest.warns(TieWarning):
        W0 = run_backtest(pd.DataFrame(100.0, index=sess[:50], columns=SYMS), ScoreStrategy(sc, s), s).targets
    assert np.allclose(W0.dropna().to_numpy(), 1 / len(SYMS))
