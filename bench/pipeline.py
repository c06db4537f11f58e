"""Time per stage of the pipeline, printed (not a test).

1. The embedded data (20 stocks, 1990-2022): load, validate, features, train per model (one walk-forward fold), backtest.
2. A synthetic 500-symbol x 25-year panel: features, and the backtest engine (weekly rebalancing of 500 symbols with
   costs and pre-trade limits). Targets on one CPU core: features >= 5,000,000 symbol-days/s in steady state (the
   first call in a process also pays the kernel's page faults for its 756 MB result, see the floor line);
   backtest >= 1,500,000.

Run with one core to compare with the targets:  taskset -c 0 .venv/bin/python bench/pipeline.py
"""
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
import pandas as pd
import torch

torch.set_num_threads(1)
from trading_lib.config import load_settings
from trading_lib.data.sources import load_market, to_panel, validate_bars
from trading_lib.features import compute_features, make_labels, synthetic_bars
from trading_lib.models.factory import make_forecaster
from trading_lib.portfolio.weights import rebalance_mask, target_weights
from trading_lib.research.backtest import walk_forward_folds
from trading_lib.trading.engine import run_backtest

FEATURES_TARGET = 5_000_000  # symbol-days/s on one core, steady state


def timed(label, fn, n=None, unit="symbol-days"):
    t0 = time.perf_counter(); out = fn(); dt = time.perf_counter() - t0
    rate = f"   {n / dt:>14,.0f} {unit}/s" if n else ""
    print(f"{label:<48s}{dt:9.3f} s{rate}", flush=True)
    return out


def embedded(settings):
    print("== embedded data (skfolio S&P 500 sample, 20 stocks) ==")
    m = timed("load + validate (load_market)", lambda: load_market(settings))
    n = len(m.bars)
    timed("validate only", lambda: validate_bars(m.bars, settings.data.max_gap_sessions, settings.data.max_abs_return), n)
    f = timed("features", lambda: compute_features(m.bars, m.benchmark, m.vix, settings.features.beta_window), n)
    lab = make_labels(m.bars, settings.models.horizons)
    dates = f.index.get_level_values("timestamp").unique()
    fold = walk_forward_folds(dates, settings)[0]
    t = f.index.get_level_values("timestamp")
    tr, va = (t <= fold.fit_end), (t >= fold.valid_start) & (t <= fold.train_end)
    cols = [c for c in f.columns if f[tr][c].notna().mean() >= 0.5]
    for name in settings.models.names:
        model = make_forecaster(name, settings.models, settings.models.horizons)
        if hasattr(model, "progress"): model.progress = False
        timed(f"train {name} (fold 1: {tr.sum():,} rows)", lambda: model.fit(f[tr][cols], lab[tr], valid_features=f[va][cols], valid_labels=lab[va]), int(tr.sum()), "rows")
    close = to_panel(m.bars)
    w = target_weights(np.random.default_rng(0).normal(size=close.shape), "topk", 5, 0.25)
    w[~rebalance_mask(close.index, "W")] = np.nan
    timed("backtest (weekly, 20 symbols, 33 years)", lambda: run_backtest(close, pd.DataFrame(w, index=close.index, columns=close.columns), settings), close.size)


def synthetic(settings, n_symbols=500, n_days=6300):
    print(f"== synthetic panel: {n_symbols} symbols x {n_days} sessions ({n_symbols * n_days:,} symbol-days) ==")
    bars, bench = timed("generate", lambda: synthetic_bars(n_symbols, n_days, seed=0))
    n = len(bars)
    timed("validate", lambda: validate_bars(bars, max_abs_return=1.0), n)
    compute_features(bars.iloc[: 50 * 300], bench)  # warm-up (imports, first-touch allocations of small arrays)
    timed("features (first call)", lambda: compute_features(bars, bench, None), n)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter(); compute_features(bars, bench, None); best = min(best, time.perf_counter() - t0)
    verdict = "met" if n / best >= FEATURES_TARGET else "NOT met"
    print(f"{'features (steady state, best of 3)':<48s}{best:9.3f} s   {n / best:>14,.0f} symbol-days/s"
          f"   target {FEATURES_TARGET:,}: {verdict}", flush=True)
    nf = len(compute_features(bars.iloc[:1000], bench).columns)
    timed(f"  floor: first touch of a fresh {nf}-column float64 result", lambda: np.empty((nf, n)).fill(0.0), n)
    close = to_panel(bars)
    sig = np.random.default_rng(1).normal(size=close.shape)
    w = target_weights(sig, "topk", 50, 0.05); w[~rebalance_mask(close.index, "W")] = np.nan
    W = pd.DataFrame(w, index=close.index, columns=close.columns)
    s = settings.replace(risk__max_orders_per_minute=100_000)
    bt = timed("backtest engine (weekly, costs, pre-trade limits)", lambda: run_backtest(close, W, s), n)
    print(f"   orders {bt.n_orders:,}, fills {bt.n_fills:,}, refusals {bt.refusals}")


if __name__ == "__main__":
    s = load_settings()
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    embedded(s)
    synthetic(s)
