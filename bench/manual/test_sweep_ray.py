"""Issue 14 (manual, not in make test: Ray does not start in the 2-core sandbox, and its GCS binds a non-loopback
address there): a sweep run as Ray tasks on a 2-worker local Ray equals the serial sweep, trial for trial.
Run: .venv/bin/python -m pytest bench/manual/test_sweep_ray.py"""
from pathlib import Path

import pandas as pd

from trading_lib.config import load_settings
from trading_lib.data.sources import load_market
from trading_lib.research.pipeline import build_dataset
from trading_lib.research.sweep import load_space, run_sweep

ROOT = Path(__file__).resolve().parents[2]


def test_ray_sweep_equals_serial(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a local Ray, started and stopped by the sweep
    s = load_settings(universe__symbols="AAPL,MSFT,JPM,XOM,KO,PFE", data__start="2003-01-01", data__end="2009-12-31",
                      walk_forward__test_start="2008-01-01", features__use_vix=False)
    m = load_market(s); f, l = build_dataset(m, s)
    spec = load_space(ROOT / "sweeps" / "lgbm_small.yaml") | {"trials": 4}
    serial = run_sweep(spec, f, l, m.panel("close"), s, "serial", data_hash=m.data_hash, trials_path=tmp_path / "t.jsonl")
    ray_ = run_sweep(spec, f, l, m.panel("close"), s, "ray", workers=2, data_hash=m.data_hash, trials_path=tmp_path / "t.jsonl")
    pd.testing.assert_frame_equal(serial.drop(columns="seconds"), ray_.drop(columns="seconds"))
    assert serial["lgbm_num_leaves"].nunique() > 1 and serial["rank_ic"].nunique() == 4  # four different trials
    assert serial.attrs["best"]["number"] == ray_.attrs["best"]["number"] == serial.attrs["best_trial"]
    assert ray_.attrs["n_trials_on_data"] == 4  # the same four configurations, counted once each for the DSR
