"""Issue 12: the live replay's cost per session. Replays `--start`..`--end` (default 2022) of the default universe at
speed 0 through the live job's own path (`open_session`: embedded Redis with the settings' appendfsync, the SQLite
audit ledger, the journalled simulated broker; `LiveTrader.run`), on the newest train run's forecasts (or 20-day
momentum when no train run exists), in a temporary directory. Prints wall time (after the kernel started: imports,
data load and Redis start excluded and printed apart), seconds per session (p50/p99, first vs last quarter of the run
to show whether the cost grows with the run), ledger records per decision and the time spent in the ledger, Redis and
the broker journal. `--profile` prints the top of a cProfile.

Run: taskset -c 0 .venv/bin/python bench/replay.py [--start 2022-01-01] [--end 2022-12-31] [--profile]"""
import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np

t_import = time.perf_counter()
from trading_lib.data.sources import load_market  # noqa: E402
from trading_lib.live.state import close_redis  # noqa: E402
from trading_lib.live.trader import LiveTrader, open_session  # noqa: E402
from trading_lib.research.pipeline import backtest_settings, load_forecasts, settings_from_parameters  # noqa: E402
from trading_lib.trading.strategy import make_strategy  # noqa: E402

t_import = time.perf_counter() - t_import


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--start", default="2022-01-01")
    ap.add_argument("--end", default="2022-12-31")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    t0 = time.perf_counter()
    try:
        fc, train_run = load_forecasts("latest")
        s = backtest_settings(train_run)
        source = f"forecasts of {train_run.name}"
    except (FileNotFoundError, ValueError):
        fc, s, source = None, settings_from_parameters(), "momentum (no train run)"
    s = s.replace(redis__embedded_dir=str(tmp / "live" / "redis"), metrics__enabled=False)
    market = load_market(s)
    if fc is None:
        close = market.panel("close")
        mom = close.pct_change(20)
        fc = mom.stack().rename("prediction").reset_index().rename(columns={"level_1": "symbol"}).dropna()
        fc = fc.assign(horizon=s.portfolio.signal_horizon, confidence=0.5, model="momentum")
    session = open_session(s, "bench", "replay", root=tmp)
    strat = make_strategy(s.strategy.name, s, forecasts=fc)
    trader = LiveTrader(s, "bench", market, fc, session.broker, session.state, session.queue, session.ledger,
                        strategy=strat)
    t_setup = time.perf_counter() - t0
    per = []
    step = trader.step

    def timed(t):
        t1 = time.perf_counter(); step(t); per.append(time.perf_counter() - t1)
    trader.step = timed
    prof = cProfile.Profile() if a.profile else None
    t1 = time.perf_counter()
    if prof: prof.enable()
    hist = trader.run(start=a.start, end=a.end)
    if prof: prof.disable()
    wall = time.perf_counter() - t1
    n_rec = session.ledger.head()[0] + 1
    session.close()
    close_redis(session.redis, shutdown=True)  # the bench's own embedded Redis: nothing left running
    per = np.array(per); q = max(len(per) // 4, 1)
    print(f"replay {a.start}..{a.end}, {len(trader.symbols)} symbols, strategy {strat.name} on {source}")
    print(f"  imports {t_import:.1f} s, setup (data, Redis, ledger, broker) {t_setup:.1f} s  (not counted)")
    print(f"  {len(per)} sessions in {wall:.2f} s  (target < 10 s): per session p50 {np.median(per) * 1e3:.1f} ms, "
          f"p99 {np.quantile(per, 0.99) * 1e3:.1f} ms; first quarter mean {per[:q].mean() * 1e3:.1f} ms, "
          f"last quarter {per[-q:].mean() * 1e3:.1f} ms")
    print(f"  decisions {trader.counts['decisions']}, orders {trader.counts['orders']}, "
          f"fills {len(session.broker.fills)}, ledger records {n_rec} "
          f"({n_rec / max(trader.counts['decisions'], 1):.1f} per decision); final equity {hist['equity'].iloc[-1]:,.2f}")
    if prof:
        st = pstats.Stats(prof)
        st.sort_stats("cumulative").print_stats(35)
        st.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
