"""Circuit breakers on real 2022 data (issue 16, items 6 and 7): the daily-loss limit is measured from the previous
session's close, and the drawdown peak and start-of-day equity survive a restart of the live job."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_live import SYMS, market_and_forecasts, open_all, settings_for

from trading_lib.config import load_settings
from trading_lib.data.sources import EmbeddedSource, to_panel
from trading_lib.live.state import close_redis
from trading_lib.live.trader import LiveTrader
from trading_lib.trading.engine import run_backtest
from trading_lib.trading.risk import TradingState


@pytest.fixture(scope="module")
def close_2022():
    return to_panel(EmbeddedSource().bars(SYMS, "2022-01-01", "2022-12-31"))


def test_daily_loss_limit_fires_on_the_first_losing_session_of_2022(close_2022):
    close = close_2022
    target = pd.DataFrame(np.nan, index=close.index, columns=close.columns)
    target.iloc[0] = 1 / len(SYMS)  # buy and hold the six stocks from the first close
    s = load_settings(environ={}).replace(risk__daily_loss_limit_pct=0.001, risk__max_drawdown_pct=0.9)
    free = run_backtest(close, target, s, circuit_breakers=False).equity
    day = free / free.shift(1) - 1
    losing = day[day < -0.001]
    assert len(losing) > 50  # 2022 had many sessions losing more than 0.1 %
    first = losing.index[0]
    res = run_backtest(close, target, s, circuit_breakers=True)
    assert [(c.timestamp, c.new) for c in res.state_changes] == [(first, TradingState.HALTED)]
    assert "daily loss" in res.state_changes[0].reason
    assert f"{day[first]:.2%}" in res.state_changes[0].reason
    pd.testing.assert_series_equal(res.equity[:first], free[:first])  # the same path up to the halt


END = "2022-05-31"  # the reference run halts in April 2022


def _halt_session(led, run_id):
    ch = [r.payload for r in led.records(kind="state") if r.payload.get("to") == "HALTED"]
    return ch[0]["reason"] if ch else None


def _replay(tmp, run_id, stops, wipe_redis_breakers=False):
    "Replay Jan-May 2022 with a 6 % drawdown limit, restarting (a new trader, as a new process would) at each date in `stops`."
    s = settings_for(tmp, risk__max_drawdown_pct=0.06, risk__daily_loss_limit_pct=0.5, portfolio__rebalance="W")
    md, fc, _ = market_and_forecasts("2021-11-01", "2022-12-31")
    r, st, led, q, b = open_all(tmp, s)
    try:
        halted_at, eq = None, None
        for end in [*stops, END]:
            if wipe_redis_breakers:
                for k in r.scan_iter("tl:live:*:breakers"): r.delete(k)  # Redis lost it: the ledger still has it
            tr = LiveTrader(s, run_id, md, fc, b, st, q, led, circuit_breakers=True)
            h = tr.run(start="2022-01-03", end=end)
            eq = h["equity"] if eq is None else pd.concat([eq, h["equity"]])
            if tr.sm.state == TradingState.HALTED and halted_at is None and tr.sm.changes:
                halted_at = tr.sm.changes[-1].timestamp
        return halted_at, eq, _halt_session(led, run_id), len(b.orders)
    finally:
        close_redis(r, shutdown=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _replay(tmp_path_factory.mktemp("ref"), "dd", [])


@pytest.mark.parametrize("wipe", [False, True], ids=["redis", "ledger"])
def test_resumed_run_halts_on_the_same_session_as_an_uninterrupted_one(tmp_path, wipe, reference):
    ref_halt, ref_eq, ref_reason, ref_orders = reference
    assert ref_halt is not None and "drawdown" in ref_reason
    # stop the job on the session before the halt: the peak lies behind it
    stop = ref_eq.index[ref_eq.index.get_loc(ref_halt) - 1]
    peak = ref_eq[:stop].max()
    assert ref_eq[stop] / peak - 1 < -0.03  # the resumed run starts well below the peak
    halt, eq, reason, n_orders = _replay(tmp_path / "resumed", "dd", [stop.strftime("%Y-%m-%d")], wipe)
    assert halt == ref_halt and reason == ref_reason
    assert n_orders == ref_orders  # not one order more after the limit
    pd.testing.assert_series_equal(eq[:ref_halt], ref_eq[:ref_halt], check_freq=False)
