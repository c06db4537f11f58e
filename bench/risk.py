"""Monte Carlo VaR for 1,000,000 paths × 500 assets (NumPy on CPU; torch on CPU; torch/CuPy on the GPU when present)
and the time per optimisation of a 500-asset portfolio for each skfolio method (printed).

Asset returns: a synthetic 3-factor covariance (daily vols 1–3%), portfolio weights from a Dirichlet draw. Paths are
drawn in chunks of 20,000 × 500; the 1-day horizon is timed at full size, 10 days at 100,000 paths.
Run: .venv/bin/python bench/risk.py [--paths 1000000] [--assets 500]
"""
import argparse
import time

import numpy as np

from trading_lib.analytics.risk_analytics import monte_carlo_var
from trading_lib.portfolio.optimisation import OPTIMISED_METHODS, optimise_window

ap = argparse.ArgumentParser()
ap.add_argument("--paths", type=int, default=1_000_000)
ap.add_argument("--assets", type=int, default=500)
ap.add_argument("--obs", type=int, default=756, help="daily returns in the optimisation window")
a = ap.parse_args()
N, P = a.assets, a.paths
rng = np.random.default_rng(0)
B = rng.normal(0, 1, (N, 3)) * np.array([0.010, 0.006, 0.004])
vol = rng.uniform(0.01, 0.03, N)
cov = B @ B.T + np.diag(vol**2)
mu = np.full(N, 3e-4); w = rng.dirichlet(np.ones(N))
sd = np.sqrt(w @ cov @ w)
print(f"portfolio: {N} assets, daily vol {sd:.4%}; closed-form normal 1-day 99% VaR {2.326348 * sd - w @ mu:.5f}")


def timed(label, **kw):
    t0 = time.perf_counter(); out = monte_carlo_var(w, mu, cov, **kw); s = time.perf_counter() - t0
    n = kw.get("n_paths"); h = kw.get("horizon", 1)
    print(f"  {label:28s} {n:>9,} paths × {h:2d} d: {s:7.2f} s  ({n * h * N / s / 1e6:8.1f} M asset-draws/s)   "
          f"VaR99 {out[0.99][0]:.5f}  CVaR99 {out[0.99][1]:.5f}  VaR95 {out[0.95][0]:.5f}")
    return out


print("\nMonte Carlo VaR")
timed("numpy cpu float64", n_paths=P)
timed("numpy cpu float64", n_paths=P // 10, horizon=10)
try:
    import torch
    torch.set_num_threads(torch.get_num_threads())
    timed(f"torch cpu float64 ({torch.get_num_threads()} thr)", n_paths=P, backend="torch")
    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
        monte_carlo_var(w, mu, cov, n_paths=100_000, backend="torch", device="cuda")  # warm-up
        torch.cuda.synchronize()
        timed(f"torch cuda float32 ({dev})", n_paths=P, backend="torch", device="cuda", chunk=200_000)
        timed("torch cuda float64", n_paths=P, backend="torch", device="cuda", chunk=200_000, dtype=torch.float64)
        timed("torch cuda float32", n_paths=P, horizon=10, backend="torch", device="cuda", chunk=50_000)
    else:
        print("  (no CUDA device: GPU path not timed)")
except ImportError:
    print("  (torch not installed)")
try:
    import cupy  # noqa: F401
    print("  (CuPy present; the library's GPU path is torch)")
except ImportError:
    pass

print(f"\nOptimisation of a {N}-asset portfolio ({a.obs} daily returns, Ledoit-Wolf prior, max weight 5%)")
L = np.linalg.cholesky(cov)
X = mu + rng.standard_normal((a.obs, N)) @ L.T
fc = rng.normal(3e-4, 5e-4, N)
for m in OPTIMISED_METHODS:
    reps = 3
    t0 = time.perf_counter()
    for _ in range(reps): wt = optimise_window(X, m, fc if m.startswith("mean") else None, max_weight=0.05)
    s = (time.perf_counter() - t0) / reps
    print(f"  {m:15s} {s * 1000:9.1f} ms per optimisation   (sum w {wt.sum():.4f}, max w {wt.max():.4f}, n>0 {int((wt > 0).sum())})")

print("\nWeekly HRP backtest of the 20 embedded stocks, 2005-2022, through the engine (formerly a timed test; target < 60 s)")
import pandas as pd  # noqa: E402

from trading_lib.config import load_settings  # noqa: E402
from trading_lib.data.sources import EmbeddedSource  # noqa: E402
from trading_lib.trading.engine import run_backtest  # noqa: E402
from trading_lib.trading.strategy import ScoreStrategy  # noqa: E402

close = EmbeddedSource().bars(None, "1990-04-11").close.unstack("symbol")
S = load_settings(environ={}).replace(portfolio__method="hrp")
C = close.loc["2005":"2022"]
t0 = time.perf_counter()
bt = run_backtest(close, ScoreStrategy(pd.DataFrame(0.0, index=C.index, columns=C.columns), S), S, start=C.index[0], end=C.index[-1])
secs = time.perf_counter() - t0
print(f"  {bt.targets.notna().all(axis=1).sum()} decisions, {bt.n_fills} fills in {secs:.1f} s "
      f"({'met' if secs < 60 else 'NOT met'}: target < 60 s); final equity {bt.equity.iloc[-1]:,.2f}")
