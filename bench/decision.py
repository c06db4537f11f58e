"""Latency of one live decision for 500 symbols, per stage, printed (not a test). Two paths over the same models:

* batch (the former path, for reference): compute_features over the trailing 260-session window, newest row kept ->
  Forecaster.predict on pandas frames -> groupby -> top-k weights -> orders -> pre-trade checks (PreTradeRisk).
* hot path (incremental): FeatureState.update (the newest row from rolling state, no window recomputed) -> one
  models.online.OnlineForecaster per model (the live trader's ChampionForecasts serves through the same class):
  LightGBM predict_array, LSTM predict_windows (torch inference mode) with its standardised rows kept in a doubled
  ring (the window is a slice, no copy) -> top-k weights -> orders -> compiled pre-trade checks (CompiledPreTradeRisk).
  No pandas.

The hot path's forecasts are checked against the batch forecasts on the same full-history features (they must be
equal; tests/test_decision_fast.py asserts it on real data). Target (issue 12): p50 < 5 ms, p99 < 20 ms in total.

Run on one core:  taskset -c 0 .venv/bin/python bench/decision.py [n_decisions] [n_batch_decisions]
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
from trading_lib.features import FEATURE_NAMES, FeatureState, compute_features, make_labels, synthetic_bars
from trading_lib.models.factory import make_forecaster
from trading_lib.models.online import OnlineForecaster
from trading_lib.portfolio.weights import target_weights
from trading_lib.trading.engine import rebalance_orders
from trading_lib.trading.fast import CompiledPreTradeRisk
from trading_lib.trading.risk import PreTradeRisk

N, DAYS, WINDOW = 500, 700, 260
REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
BATCH_REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
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
crisk.check(0.0, np.arange(3), np.ones(3), np.ones(N), np.zeros(N), 1e6, open_qty=np.zeros(N), price_time=np.zeros(N))
hz = s.portfolio.signal_horizon; lb = s.models.lstm_lookback
pc = lambda x, q: 1e3 * float(np.percentile(x, q))

def report(title, stages, total):
    print(title)
    for k, v in stages.items(): print(f"  {k:26s} p50 {pc(v, 50):9.3f}   p99 {pc(v, 99):9.3f}")
    print(f"  {'total':26s} p50 {pc(total, 50):9.3f}   p99 {pc(total, 99):9.3f}   (target p50 < 5, p99 < 20)", flush=True)

# ---- batch path (reference, the former bench) -------------------------------------------------------------------
rng = np.random.default_rng(0)
stages = {k: [] for k in ["features (window recompute)", "lightgbm", "lstm", "weights", "orders", "checks (PreTradeRisk)"]}
total = []
for rep in range(BATCH_REPS):
    d = DAYS - BATCH_REPS + rep
    window = bars.loc[times[d - WINDOW + 1]:times[d]]
    c0 = time.perf_counter()
    f = compute_features(window, bench.loc[:times[d]], None)[cols]
    c1 = time.perf_counter(); stages["features (window recompute)"].append(c1 - c0)
    p1 = models["lightgbm"].predict(f.loc[[times[d]]])
    c2 = time.perf_counter(); stages["lightgbm"].append(c2 - c1)
    p2 = models["lstm"].predict(f.loc[times[d - lb - 2]:times[d]], start=times[d])
    c3 = time.perf_counter(); stages["lstm"].append(c3 - c2)
    pr = pd.concat([p1, p2]); pr = pr[pr["horizon"] == hz]
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
    total.append(c6 - c0)
report(f"batch path, one decision, {N} symbols, {BATCH_REPS} decisions (ms):", stages, total)

# ---- hot path -------------------------------------------------------------------------------------------------------
first = DAYS - REPS  # the first decision's session
fs = FeatureState.from_bars(bars.loc[: times[first - 1]], bench.loc[: times[first - 1]], None)
gbm, lstm = models["lightgbm"], models["lstm"]
on_g, on_l = (OnlineForecaster(m, fs.symbols, FEATURE_NAMES, horizons=[hz]) for m in (gbm, lstm))
Fw = F.to_numpy().reshape(DAYS, N, len(FEATURE_NAMES))  # batch features (full history) = what FeatureState continues
for t in range(first - lb + 1, first): on_l.observe(times[t], Fw[t])  # the LSTM's window before the first decision
C = bars["close"].to_numpy().reshape(DAYS, N); bv = bench.to_numpy()
stages = {k: [] for k in ["features (FeatureState)", "lightgbm", "lstm", "weights", "orders", "checks (compiled)"]}
total, worst = [], 0.0
for d in range(first, DAYS):
    c0 = time.perf_counter()
    row = fs.update(times[d], C[d], bv[d])
    c1 = time.perf_counter(); stages["features (FeatureState)"].append(c1 - c0)
    p1 = on_g.update(times[d], row)[:, 0]
    c2 = time.perf_counter(); stages["lightgbm"].append(c2 - c1)
    p2 = on_l.update(times[d], row)[:, 0]
    c3 = time.perf_counter(); stages["lstm"].append(c3 - c2)
    w = target_weights(((p1 + p2) / 2)[None], "topk", 50, 0.05)[0]
    c4 = time.perf_counter(); stages["weights"].append(c4 - c3)
    px = C[d]; pos = rng.integers(0, 100, N).astype(float); work = np.zeros(N); eq = 1e6
    idx, qty = rebalance_orders(w, eq, px, pos, work, s.execution.min_order_notional)
    c5 = time.perf_counter(); stages["orders"].append(c5 - c4)
    now = float(times[d].value / 1e9); pt = np.full(N, now)
    crisk.check(now, idx, np.nan_to_num(qty), px, pos, eq, open_qty=work, price_time=pt)
    c6 = time.perf_counter(); stages["checks (compiled)"].append(c6 - c5)
    total.append(c6 - c0)
    if d >= DAYS - 3:  # parity with the batch forecasts on the same (full-history) features
        q1 = gbm.predict(F.loc[[times[d]], cols]); q1 = q1[q1["horizon"] == hz]["prediction"].to_numpy()
        q2 = lstm.predict(F.loc[times[d - lb - 2]:times[d], cols], start=times[d])
        q2 = q2[q2["horizon"] == hz]["prediction"].to_numpy()
        np.testing.assert_array_equal(row, F.xs(times[d], level="timestamp").to_numpy())
        worst = max(worst, float(np.max(np.abs(p1 - q1))), float(np.max(np.abs(p2 - q2))))
report(f"hot path, one decision, {N} symbols, {REPS} decisions (ms):", stages, total)
print(f"hot-path forecasts vs batch forecasts (last 3 sessions): max |difference| = {worst:.3g}")
