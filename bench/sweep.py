"""Speed-up of a sweep on a 2-worker local Ray over the serial sweep (same trials, same results): prints both times.
Run: python bench/sweep.py [TRIALS]   (make bench)"""
import sys
import time

import pandas as pd

from trading_lib.config import load_settings, project_root
from trading_lib.data.sources import load_market
from trading_lib.research.pipeline import build_dataset
from trading_lib.research.sweep import load_space, run_sweep

n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
s = load_settings(universe__symbols="AAPL,MSFT,JPM,XOM,KO,PFE,GE,WMT", data__start="2000-01-01", data__end="2012-12-31",
                  walk_forward__test_start="2008-01-01", features__use_vix=False)
m = load_market(s); f, l = build_dataset(m, s); c = m.panel("close")
spec = load_space(project_root() / "sweeps" / "lgbm_small.yaml") | {"trials": n}
t0 = time.perf_counter(); a = run_sweep(spec, f, l, c, s, "serial"); ts = time.perf_counter() - t0
t0 = time.perf_counter(); b = run_sweep(spec, f, l, c, s, "ray", workers=2); tr = time.perf_counter() - t0
pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"))
print(f"{n} trials: serial {ts:.1f} s, Ray 2 workers {tr:.1f} s (incl. Ray start-up), speed-up {ts / tr:.2f}x; results identical")
