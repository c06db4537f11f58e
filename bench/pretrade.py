"""Pre-trade check latency per order for a 500-symbol book (printed; target p99 < 1 ms).

Each call checks one order (the live loop's case) against all limits of `PreTradeRisk` with a 500-symbol book of
positions, working orders and last prices; a second series checks whole 500-order rebalance batches.
Run: taskset -c 0 .venv/bin/python bench/pretrade.py
"""
import time

import numpy as np

from trading_lib.config import load_settings
from trading_lib.trading.risk import PreTradeRisk

N, CALLS = 500, 20_000
s = load_settings().risk.model_copy(update=dict(max_orders_per_minute=10**9, duplicate_window_seconds=60.0))
rng = np.random.default_rng(0)
syms = [f"S{i:03d}" for i in range(N)]
last = rng.uniform(10, 500, N); pos = rng.integers(0, 200, N).astype(float); working = np.zeros(N)
ptime = np.zeros(N)
equity = float((pos * last).sum() * 1.5)
risk = PreTradeRisk(s, syms)

lat = np.empty(CALLS)
for i in range(CALLS):
    j = int(rng.integers(N)); q = float(rng.integers(1, 50)) * (1 if i % 2 else -1)
    t0 = time.perf_counter_ns()
    risk.check(now=i * 0.001, sym_idx=[j], qty=[q], last_price=last, positions=pos, equity=equity, open_qty=working,
               price_time=ptime)
    lat[i] = (time.perf_counter_ns() - t0) / 1e3
print(f"single-order check, {N}-symbol book, {CALLS:,} calls: p50 {np.percentile(lat, 50):.1f} µs, "
      f"p99 {np.percentile(lat, 99):.1f} µs, max {lat.max():.1f} µs  (target p99 < 1000 µs)")

B = 200
lat = np.empty(B)
for i in range(B):
    q = rng.integers(-50, 50, N).astype(float); q[q == 0] = 1
    t0 = time.perf_counter_ns()
    risk.check(now=1e6 + i * 120.0, sym_idx=np.arange(N), qty=q, last_price=last, positions=pos, equity=equity,
               open_qty=working, price_time=np.full(N, 1e6 + i * 120.0))
    lat[i] = (time.perf_counter_ns() - t0) / 1e3
print(f"500-order batch check: p50 {np.percentile(lat, 50):.0f} µs per batch = {np.percentile(lat, 50) / N:.2f} µs per order, "
      f"p99 {np.percentile(lat, 99):.0f} µs per batch")
