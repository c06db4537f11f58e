"""Issue 14: a sweep run as Ray tasks on a 2-worker local Ray (`LocalRay`: `ray start --head` on 127.0.0.1, started and
stopped by the test) equals the serial sweep, trial for trial; nothing of that Ray outlives it."""
import os
import time
from pathlib import Path

import pandas as pd
import psutil

from trading_lib.config import load_settings
from trading_lib.data.sources import load_market
from trading_lib.research.pipeline import build_dataset
from trading_lib.research.sweep import LocalRay, load_space, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def test_ray_sweep_equals_serial(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    t0 = time.perf_counter()
    head = LocalRay(workers=2)  # boots (~20-40 s on a loaded 2-core machine) while the data and serial sweep run
    try:
        s = load_settings(universe__symbols="AAPL,MSFT,JPM,XOM,KO,PFE", data__start="2003-01-01", data__end="2009-12-31",
                          walk_forward__test_start="2008-01-01", features__use_vix=False)
        m = load_market(s); f, l = build_dataset(m, s)
        spec = load_space(ROOT / "sweeps" / "lgbm_small.yaml") | {"trials": 4}
        serial = run_sweep(spec, f, l, m.panel("close"), s, "serial", data_hash=m.data_hash, trials_path=tmp_path / "t.jsonl")
        t1 = time.perf_counter()
        head.wait()
        t2 = time.perf_counter()
        ray_ = run_sweep(spec, f, l, m.panel("close"), s, "ray", data_hash=m.data_hash, trials_path=tmp_path / "t.jsonl",
                         address=head.address)
        t3 = time.perf_counter()
    finally:
        head.stop()
    print(f"serial part {t1 - t0:.1f} s, waiting for Ray {t2 - t1:.1f} s, Ray sweep {t3 - t2:.1f} s, "
          f"stop {time.perf_counter() - t3:.1f} s")
    pd.testing.assert_frame_equal(serial.drop(columns="seconds"), ray_.drop(columns="seconds"))
    assert serial["lgbm_num_leaves"].nunique() > 1 and serial["rank_ic"].nunique() == 4  # four different trials
    assert serial.attrs["best"]["number"] == ray_.attrs["best"]["number"] == serial.attrs["best_trial"]
    assert ray_.attrs["n_trials_on_data"] == 4  # the same four configurations, counted once each for the DSR
    assert not head.dir.exists() and not psutil.pid_exists(head.proc.pid)
    assert not [p for p in psutil.process_iter() if _sid(p) == head.proc.pid]  # no Ray process left behind


def _sid(p):
    try: return os.getsid(p.pid)
    except OSError: return None
