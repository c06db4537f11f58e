"""Research-to-live parity of the one engine: for every built-in portfolio method, with and without volatility
targeting, and for a strategy and a forecaster of a researcher's own (named module:Class), a replay through the live
shell (Redis, ledger, approvals, the journalled simulated broker) makes the same orders and fills, so the same equity
path, as the backtest over the same window."""
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trading_lib.config import load_settings
from trading_lib.data.sources import EmbeddedSource, MarketData, to_panel
from trading_lib.execution.brokers import SimulatedBroker
from trading_lib.execution.simulated import CostModel
from trading_lib.live.approvals import ApprovalQueue
from trading_lib.live.audit import Ledger, verify
from trading_lib.live.state import LiveState, close_redis, connect_redis
from trading_lib.live.trader import LiveTrader
from trading_lib.trading.engine import run_backtest
from trading_lib.trading.strategy import PORTFOLIO_METHODS, ForecastStrategy, make_strategy

SYMS = ["AAPL", "JPM", "KO", "XOM", "PFE", "MSFT", "WMT", "CVX"]
START, END = "2019-04-01", "2019-06-28"  # the traded window; history from 2018 feeds covariances and GARCH


@pytest.fixture(scope="module")
def market():
    bars = EmbeddedSource().bars(SYMS, "2018-01-01", END)
    close = to_panel(bars)
    mom = close.pct_change(20)  # known at each close: a look-ahead-free stand-in for model forecasts
    fc = mom.stack().rename("prediction").reset_index().rename(columns={"level_1": "symbol"}).dropna()
    fc = fc.assign(horizon=20, confidence=0.5, model="momentum")
    return MarketData(bars, None, None, {}, "test", None), fc, close


def settings_for(tmp, **kw):
    base = dict(approvals__max_notional=1e12, approvals__max_weight_change=1.0, approvals__min_confidence=0.0,
                redis__embedded_dir=str(Path(tmp) / "redis"), redis__appendfsync="everysec",
                portfolio__top_k=3, portfolio__rebalance="W", portfolio__cov_window=120, portfolio__vol_window=200)
    return load_settings(environ={}).replace(**(base | kw))


def replay(tmp, s, md, strategy, run_id):
    r = connect_redis(s, appendfsync=s.redis.appendfsync)
    led = Ledger(Path(tmp) / "ledger.sqlite")
    st = LiveState(r, ledger=led)
    if st.kill_switch() is None: st.release_kill_switch("test-supervisor", "test start")
    q = ApprovalQueue(r, led, s.approvals.expiry_seconds)
    b = SimulatedBroker.open(Path(tmp) / f"{run_id}-broker.json", CostModel.from_settings(s.costs), s.execution.initial_cash)
    try:
        tr = LiveTrader(s, run_id, md, None, b, st, q, led, circuit_breakers=False, strategy=strategy)
        hist = tr.run(start=START, end=END)
    finally:
        close_redis(r, shutdown=True)
    assert verify(led.path).ok
    orders = sorted((str(pd.Timestamp(o.decision_time).date()), o.symbol, round(o.sign * o.qty, 6))
                    for o in list(tr.done.values()) + list(tr.orders.values()) if o.broker_order_id)
    fills = sorted((str(pd.Timestamp(f.timestamp).date()), round(f.qty, 6)) for f in b.fills)
    return hist, orders, fills


def backtest(s, close, strategy):
    bt = run_backtest(close, strategy, s, start=START, end=END)
    orders = sorted((str(t.date()), sym, round(q, 6)) for t, sym, q in bt.orders.itertuples(index=False))
    return bt, orders


def assert_same(hist, r_orders, r_fills, bt, b_orders):
    assert len(b_orders) > 10, "the window must trade"
    assert r_orders == b_orders
    assert len(r_fills) == bt.n_fills
    np.testing.assert_allclose(hist["equity"].to_numpy(), bt.equity.to_numpy(), rtol=1e-9)


@pytest.mark.parametrize("vol_target", [False, True], ids=["plain", "vol-target"])
@pytest.mark.parametrize("method", PORTFOLIO_METHODS)
def test_replay_equals_backtest_for_every_portfolio_method(tmp_path, market, method, vol_target):
    md, fc, close = market
    s = settings_for(tmp_path, portfolio__method=method, portfolio__vol_target_enabled=vol_target)
    hist, ro, rf = replay(tmp_path, s, md, ForecastStrategy(fc, s), f"parity-{method}")
    bt, bo = backtest(s, close, ForecastStrategy(fc, s))
    assert_same(hist, ro, rf, bt, bo)


USER_MODULE = textwrap.dedent('''
    import numpy as np
    from trading_lib.trading.strategy import Strategy
    from trading_lib.models.base import LightGBMForecaster

    class LowVolatility(Strategy):
        """Every 10 sessions: the 3 symbols with the lowest 60-session volatility, 30 % each."""
        name = "low_volatility"
        def __init__(self, settings): self.k = settings.portfolio.top_k
        def target_weights(self, ctx):
            if ctx.t % 10 or len(ctx.close) < 61: return None
            r = np.diff(np.log(ctx.close[-61:]), axis=0)
            vol = np.where(np.isfinite(r).all(0), r.std(0), np.inf)
            w = np.zeros(len(ctx.symbols)); w[np.argsort(vol, kind="stable")[:self.k]] = 0.3
            return w

    class TinyGBM(LightGBMForecaster):
        name = "tiny_gbm"
        def __init__(self, horizons=(1,), seed=0, n_estimators=10, **kw):
            super().__init__(horizons=horizons, seed=seed, n_estimators=n_estimators, **kw)
''')


def test_user_strategy_and_forecaster_by_module_name(tmp_path, market):
    """A researcher's own strategy and forecaster in a module of the project directory, named module:Class, run in the
    backtest and in a replay with the same result; the forecaster's forecasts drive the forecast strategy."""
    from trading_lib.features import compute_features, make_labels
    from trading_lib.models.factory import make_forecaster
    md, fc, close = market
    (tmp_path / "my_research.py").write_text(USER_MODULE)
    s = settings_for(tmp_path)
    mine = lambda: make_strategy("my_research:LowVolatility", s, root=tmp_path)
    hist, ro, rf = replay(tmp_path, s, md, mine(), "user-strategy")
    bt, bo = backtest(s, close, mine())
    assert_same(hist, ro, rf, bt, bo)
    # the forecaster: fit on 2018, forecast the window, trade its forecasts the same way in both
    bars = md.bars
    feats = compute_features(bars, EmbeddedSource().series("SP500", "2018-01-01", END), None)
    labels = make_labels(bars, [1, 20])
    t = feats.index.get_level_values("timestamp")
    f = make_forecaster("my_research:TinyGBM", s.models.model_copy(update={"horizons": [1, 20]}), root=tmp_path)
    assert type(f).__name__ == "TinyGBM"
    f.fit(feats[t < "2018-11-01"], labels[t < "2018-11-01"])
    fc2 = f.predict(feats[t >= "2019-01-01"]).assign(model="tiny_gbm")
    hist, ro, rf = replay(tmp_path, s, md, ForecastStrategy(fc2, s), "user-model")
    bt, bo = backtest(s, close, ForecastStrategy(fc2, s))
    assert_same(hist, ro, rf, bt, bo)
