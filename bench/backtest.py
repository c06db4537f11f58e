"""Backtest throughput of the reference engine (`engine.run_backtest`) and the compiled core (`fast.run_backtest_fast`),
printed (not a test), and the peak memory of a 2,000 x 6,300 compiled backtest.

Synthetic panels: random-walk closes with 1 % missing bars, top-50 equal weights (2 % each) re-drawn on each rebalance
session; costs and every pre-trade check on (the rate throttle raised to 100,000 orders/minute, as in bench/pipeline.py,
so that a 500-order rebalance is not throttled). Each case also checks that both give the same equity.
Targets (issue 12, one core): >= 30 M symbol-days/s at 500 x 6,300 weekly, >= 10 M/s daily, >= 10 M/s at 100 x 6,300;
peak RSS <= 600 MB at 2,000 x 6,300.

Run on one core:  taskset -c 0 .venv/bin/python bench/backtest.py      (add --no-reference to skip the slow engine)
Peak memory only: taskset -c 0 .venv/bin/python bench/backtest.py --rss 2000 [--reference]
"""
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import pandas as pd


def panel(n_symbols, n_days, freq="W", k=50, seed=0):
    "(close, target) frames, built in place to keep memory low."
    rng = np.random.default_rng(seed)
    ix = pd.date_range("2000-01-03", periods=n_days, freq="B", tz="UTC", name="timestamp")
    C = np.empty((n_days, n_symbols), order="F")
    for i in range(n_symbols):
        col = rng.normal(0.0003, 0.02, n_days); np.cumsum(col, out=col); np.exp(col, out=col); col *= 50.0
        col[rng.random(n_days) < 0.01] = np.nan
        C[:, i] = col
    W = np.full((n_days, n_symbols), np.nan, order="F")
    from trading_lib.portfolio.weights import rebalance_mask
    k = min(k, n_symbols)
    for t in np.flatnonzero(rebalance_mask(ix, freq)):
        W[t] = 0.0; W[t, rng.choice(n_symbols, k, replace=False)] = 1.0 / k
    cols = [f"S{i:04d}" for i in range(n_symbols)]
    return pd.DataFrame(C, ix, cols, copy=False), pd.DataFrame(W, ix, cols, copy=False)


def settings():
    from trading_lib.config import load_settings
    return load_settings().replace(risk__max_orders_per_minute=100_000)


def rss_mb():
    "Peak resident memory of this process (VmHWM, MB; unlike ru_maxrss it does not inherit the parent's peak)."
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024


def throughput(reference=True):
    from trading_lib.trading.engine import run_backtest
    from trading_lib.trading.fast import run_backtest_fast
    s = settings()
    c, w = panel(20, 60); run_backtest_fast(c, w, s)  # load (or compile, on a fresh checkout) the compiled core
    for n, T, freq in [(500, 6300, "W"), (500, 6300, "D"), (100, 6300, "W"), (100, 6300, "D")]:
        close, target = panel(n, T, freq)
        sd = n * T
        times = []
        for _ in range(3):
            t0 = time.perf_counter(); b = run_backtest_fast(close, target, s); times.append(time.perf_counter() - t0)
        dt = min(times)
        line = f"{n:>5} x {T} {'weekly' if freq == 'W' else 'daily ':6s}  fast {dt:7.3f} s {sd / dt / 1e6:7.1f} M symbol-days/s"
        if reference:
            t0 = time.perf_counter(); a = run_backtest(close, target, s); dr = time.perf_counter() - t0
            rel = float(np.max(np.abs(b.equity.to_numpy() / a.equity.to_numpy() - 1)))
            same = a.orders.shape == b.orders.shape and a.refusals == b.refusals and a.n_fills == b.n_fills
            line += f"   reference {dr:7.3f} s {sd / dr / 1e6:6.2f} M/s   speed-up {dr / dt:5.1f}x   equity max rel diff {rel:.1e}, orders/fills/refusals equal: {same}"
        print(line + f"   (orders {b.n_orders:,}, fills {b.n_fills:,}, refusals {sum(b.refusals.values()):,})", flush=True)


def peak_memory(n, reference):
    base = rss_mb()
    close, target = panel(n, 6300, "W")
    inputs = rss_mb()
    if reference:
        from trading_lib.trading.engine import run_backtest
        t0 = time.perf_counter(); r = run_backtest(close, target, settings())
    else:
        from trading_lib.trading.fast import run_backtest_fast
        t0 = time.perf_counter(); r = run_backtest_fast(close, target, settings())
    dt = time.perf_counter() - t0
    print(f"{'reference' if reference else 'fast':9s} {n} x 6300 weekly: {dt:.2f} s; peak RSS {rss_mb():.0f} MB "
          f"(at start {base:.0f} MB, with the two input frames {inputs:.0f} MB); equity[-1] {r.equity.iloc[-1]:,.2f}", flush=True)


if __name__ == "__main__":
    if "--rss" in sys.argv:
        peak_memory(int(sys.argv[sys.argv.index("--rss") + 1]), "--reference" in sys.argv)
    else:
        print(f"python {sys.version.split()[0]}, cpus allowed {len(os.sched_getaffinity(0))}")
        throughput(reference="--no-reference" not in sys.argv)
        # peak RSS in a fresh process each (ru_maxrss is the process's high-water mark)
        subprocess.run([sys.executable, __file__, "--rss", "2000"], check=True)
