"""Latency of one live decision for 500 symbols on the current (batch) path, per stage, printed (not a test):
features for the newest bar (compute_features over the trailing 260-session window, newest row kept) -> LightGBM and
LSTM forecasts (Forecaster.predict on pandas frames) -> top-k weights -> orders (engine.rebalance_orders) -> pre-trade
checks (PreTradeRisk, and the compiled CompiledPreTradeRisk for comparison).
Target (issue 12): p50 < 5 ms, p99 < 20 ms in total. Incremental features are not implemented yet: the features stage
recomputes the window.

Run on one core:  taskset -c 0 .venv/bin/python bench/decision.py [n_decisions]
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
from trading_lib.features import compute_features, make_labels, synthetic_bars
from trading_lib.models.factory import make_forecaster
from trading_lib.portfolio.weights import target_weights
from trading_lib.trading.engine import rebalance_orders
from trading_lib.trading.fast import CompiledPreTradeRisk
from trading_lib.trading.risk import PreTradeRisk

N, DAYS, WINDOW = 500, 700, 260
REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
s = load_settings().replace(models__lgbm_n_estimators=100, models__lstm_epochs=1)
bars, bench = synthetic_bars(N, DAYS, seed=0)
times = bars.index.get_level_values("timestamp").unique()
t0 = time.perf_counter()
F = compute_features(bars, bench, None); L = make_labels(bars, s.models.horizons)
tr = bars.index.get_level_values("timestamp") < times[DAYS - 120]
cols = [c for c in F.columns if F[tr][c].notna().mean() >= 0.5]
models = {}
for name in ("lightgbm", "lstm"):
    m = make_forecaster(name, s.models, s.models.horizons)
    if hasattr(m, "progress"): m.progress = False
    m.fit(F[tr][cols].iloc[-60_000:], L[tr].iloc[-60_000:]); models[name] = m
print(f"setup (features over {N} x {DAYS}, training on 60,000 rows): {time.perf_counter() - t0:.1f} s", flush=True)

syms = list(bars.index.get_level_values("symbol").unique())
risk, crisk = PreTradeRisk(s.risk, syms), CompiledPreTradeRisk(s.risk, syms)
CompiledPreTradeRisk(s.risk, syms).check(0.0, np.arange(3), np.ones(3), np.ones(N), np.zeros(N), 1e6,
                                         open_qty=np.zeros(N), price_time=np.zeros(N))  # load the compiled check
rng = np.random.default_rng(0)
stages = {k: [] for k in ["features", "lightgbm", "lstm", "weights", "orders", "checks (PreTradeRisk)", "checks (compiled)"]}
total = []
for rep in range(REPS):
    d = DAYS - REPS + rep  # the newest bar of this decision
    window = bars.loc[times[d - WINDOW + 1]:times[d]]
    c0 = time.perf_counter()
    f = compute_features(window, bench.loc[:times[d]], None)[cols]
    c1 = time.perf_counter(); stages["features"].append(c1 - c0)
    newest = f.loc[[times[d]]]
    p1 = models["lightgbm"].predict(newest)
    c2 = time.perf_counter(); stages["lightgbm"].append(c2 - c1)
    lb = s.models.lstm_lookback
    p2 = models["lstm"].predict(f.loc[times[d - lb - 2]:times[d]], start=times[d])
    c3 = time.perf_counter(); stages["lstm"].append(c3 - c2)
    pr = pd.concat([p1, p2]); pr = pr[pr["horizon"] == s.portfolio.signal_horizon]
    score = pr.groupby("symbol")["prediction"].mean().reindex(syms).to_numpy()
    w = target_weights(score[None], "topk", 50, 0.05)[0]
    c4 = time.perf_counter(); stages["weights"].append(c4 - c3)
    px = window["close"].xs(times[d], level="timestamp").reindex(syms).to_numpy()
    pos = rng.integers(0, 100, N).astype(float); work = np.zeros(N); eq = 1e6
    idx, qty = rebalance_orders(w, eq, px, pos, work, s.execution.min_order_notional)
    c5 = time.perf_counter(); stages["orders"].append(c5 - c4)
    now = float(times[d].value / 1e9); pt = np.full(N, now)
    risk.check(now, idx, np.nan_to_num(qty), px, pos, eq, open_qty=work, price_time=pt)
    c6 = time.perf_counter(); stages["checks (PreTradeRisk)"].append(c6 - c5)
    crisk.check(now, idx, np.nan_to_num(qty), px, pos, eq, open_qty=work, price_time=pt)
    c7 = time.perf_counter(); stages["checks (compiled)"].append(c7 - c6)
    total.append(c6 - c0)

pc = lambda x, q: 1e3 * float(np.percentile(x, q))
print(f"one decision, {N} symbols, {REPS} decisions (ms):")
for k, v in stages.items(): print(f"  {k:24s} p50 {pc(v, 50):9.2f}   p99 {pc(v, 99):9.2f}")
print(f"  {'total (with PreTradeRisk)':24s} p50 {pc(total, 50):9.2f}   p99 {pc(total, 99):9.2f}   (target p50 < 5, p99 < 20)")
