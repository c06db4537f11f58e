"""Issue 14: the retrain job's promotion gates on a short window of the embedded data (a clearly better challenger is
promoted, a worse one is kept out; registry, audit ledger and summary record it), and a drift injected into one
feature is detected and starts the real retrain job through papermill."""
import json

import numpy as np
import pandas as pd
import pytest

from trading_lib.config import load_settings
from trading_lib.data.sources import load_market
from trading_lib.jobs import run_job
from trading_lib.live.audit import Ledger, verify
from trading_lib.models.base import LightGBMForecaster
from trading_lib.models.registry import ModelRegistry
from trading_lib.research.pipeline import build_dataset
from trading_lib.research.retrain import Candidate, act_on_drift, decision_summary, monitor_model, retrain

SYMS = ["AAPL", "MSFT", "JPM", "XOM", "KO", "PFE"]
START, END = "2003-01-01", "2009-12-31"


@pytest.fixture(scope="module")
def data():
    s = load_settings(universe__symbols=",".join(SYMS), data__start=START, data__end=END, models__lgbm_n_estimators=40)
    m = load_market(s)
    f, l = build_dataset(m, s)
    # a feature that carries real information about the 20-day forward return (label + as much noise again): a model
    # that sees it is better by construction, one that does not is worse
    f = f.assign(informed=l["fwd_ret_20"] + l["fwd_ret_20"].std() * np.random.default_rng(7).normal(size=len(l)))
    return s, m, f, l


def _lgbm(s):
    return lambda: LightGBMForecaster(horizons=s.models.horizons, n_estimators=40, seed=42)


def test_promotes_better_keeps_worse(data, tmp_path):
    s, m, f, l = data
    plain = [c for c in f.columns if c not in ("informed", "vix", "vix_chg_20")]
    reg, led = ModelRegistry(tmp_path / "registry"), Ledger(tmp_path / "ledger.sqlite")
    t = f.index.get_level_values("timestamp") <= pd.Timestamp("2006-12-31", tz="UTC")
    v1 = reg.register(_lgbm(s)().fit(f[t][plain], l[t]), "lgbm", training_window=(f.index[0][0], pd.Timestamp("2006-12-29", tz="UTC")))
    assert reg.resolve("lgbm", "champion") == v1 == "v0001"
    better = Candidate("challenger", _lgbm(s), plain + ["informed"], dict(features="informed"))
    worse = Candidate("challenger", _lgbm(s), plain, dict(features="plain"))
    a = retrain(f, l, m.panel("close"), s, reg, "lgbm", better, m.data_hash, m.validation_report, led, tmp_path / "trials.jsonl", "run-a")
    print(decision_summary(a.decision))
    assert a.decision["promoted"] and a.decision["failed_gates"] == []
    assert reg.resolve("lgbm", "champion") == "v0002" and a.decision["champion_before"] == "v0001"
    g = a.decision["gates"]
    assert g["paired_ic"]["mean_diff"] > 0.2 and g["paired_ic"]["value"] > 0 and g["paired_ic"]["n_sessions"] > 150
    assert g["dsr"]["value"] >= s.retrain.min_dsr and g["calibration"]["value"] <= s.retrain.max_calibration_error
    assert a.decision["context"]["eval_window"][0].startswith("2009-01")  # the last 12 months, out of sample
    b = retrain(f, l, m.panel("close"), s, reg, "lgbm", worse, m.data_hash, m.validation_report, led, tmp_path / "trials.jsonl", "run-b")
    print(decision_summary(b.decision))
    assert not b.decision["promoted"] and {"paired_ic", "paired_rank_ic"} <= set(b.decision["failed_gates"])
    assert reg.resolve("lgbm", "champion") == "v0002" and reg.resolve("lgbm", "challenger") == "v0003"
    assert b.decision["gates"]["paired_ic"]["mean_diff"] < -0.2
    assert b.decision["gates"]["dsr"]["n_trials"] == 2  # plain and informed: each distinct configuration on this data counts once
    # registry, ledger: the same decisions
    assert [d["promoted"] for d in reg.decisions("lgbm")] == [True, False]
    recs = list(led.records("retrain_decision"))
    assert [r.payload["promoted"] for r in recs] == [True, False] and [r.payload["challenger"] for r in recs] == ["v0002", "v0003"]
    assert recs[0].payload["gates"]["paired_ic"]["value"] == pytest.approx(g["paired_ic"]["value"])
    led.close(); assert verify(tmp_path / "ledger.sqlite").ok


def test_drift_in_one_feature_triggers_retrain_job(data, tmp_path, project_copy):
    s, m, f, l = data
    f = f.drop(columns="informed")
    reg = ModelRegistry(tmp_path / "registry")
    cols = [c for c in f.columns if c not in ("vix", "vix_chg_20")]
    dates = f.index.get_level_values("timestamp").unique()
    t = f.index.get_level_values("timestamp") <= dates[-200]
    v = reg.register(LightGBMForecaster(horizons=s.models.horizons, n_estimators=40).fit(f[t][cols], l[t]), "lightgbm",
                     training_window=(dates[0], dates[-200]))
    calm = monitor_model(f, l, reg, "lightgbm", s, validation_report=m.validation_report)
    # a normal quarter (Q4 2009) against the training window: only two market-wide regime features pass all three
    # conditions (PSI > 0.25, KS D > 0.5, Holm-adjusted p < 0.01); the former rule (PSI > 0.25, or D > 0.3 with p < 0.01)
    # flagged 15 of the 28 features here
    fd = calm.features
    assert set(fd.index[fd["breach"]]) == {"mkt_ret_60", "mkt_dist_ma200"}
    assert int(((fd["psi"] > 0.25) | ((fd["ks_stat"] > 0.30) & (fd["ks_pvalue"] < 0.01))).sum()) == 15
    shifted = f.copy(); recent = shifted.index.get_level_values("timestamp") >= dates[-s.drift.recent_sessions]
    shifted.loc[recent, "cs_z_ret_20"] += 1.5  # cross-sectional z-scores are stationary by construction
    rep = monitor_model(shifted, l, reg, "lightgbm", s, validation_report=m.validation_report)
    new = set(rep.features.index[rep.features["breach"]]) - set(calm.features.index[calm.features["breach"]])
    assert new == {"cs_z_ret_20"} and rep.features.loc["cs_z_ret_20", "psi"] > 1.0 and not calm.features.loc["cs_z_ret_20", "breach"]
    assert rep.features.loc["cs_z_ret_20", "ks_stat"] > s.drift.ks_min_d and rep.features.loc["cs_z_ret_20", "ks_p_adj"] < 1e-50
    led_path = tmp_path / "ledger.sqlite"
    led, runs = Ledger(led_path), []
    params = dict(models=["lightgbm"], symbols=SYMS, start=START, end=END, lgbm_n_estimators=40,
                  registry=str(reg.root), ledger=str(led_path), trials=str(tmp_path / "trials.jsonl"))
    assert act_on_drift(rep, "lightgbm", v, led, lambda: runs.append(run_job("retrain", params, root=project_copy, progress=False)))
    assert len(runs) == 1
    d = runs[0]
    met = json.loads((d / "metrics.json").read_text())
    dec = met["decisions"][0]
    assert dec["name"] == "lightgbm" and dec["challenger"] == "v0002" and dec["champion_before"] == v
    assert set(dec["gates"]) == {"paired_ic", "paired_rank_ic", "calibration", "dsr", "data"}
    assert reg.resolve("lightgbm", "champion") == dec["champion_after"]
    assert "lightgbm: challenger v0002" in (d / "summary.txt").read_text()
    kinds = [r.kind for r in Ledger(led_path).records()]
    assert kinds == ["drift_check", "retrain_decision"]
