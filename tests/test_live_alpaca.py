"""The live loop against Alpaca's trading API (the real alpaca-py client, a local fake server): one session sends one
order per symbol even when the broker answers 504 after accepting, reconciliation reports orders we did not create."""
from pathlib import Path

import pytest
from fake_alpaca import FakeAlpaca
from test_live import market_and_forecasts, settings_for

from trading_lib.execution.brokers import AlpacaBroker, ReconcileError
from trading_lib.live.approvals import ApprovalQueue
from trading_lib.live.audit import Ledger
from trading_lib.live.state import LiveState, close_redis, connect_redis
from trading_lib.live.trader import LiveTrader

KEYS = {"ALPACA_API_KEY": "PKTESTKEY123", "ALPACA_SECRET_KEY": "not-a-real-secret"}


def _parts(tmp, fake):
    s = settings_for(tmp, broker__name="alpaca", broker__timeout_seconds=2.0)
    r = connect_redis(s, appendfsync="everysec")
    led = Ledger(Path(tmp) / "ledger.jsonl"); st = LiveState(r, ledger=led)
    st.release_kill_switch("test-supervisor", "test start")
    q = ApprovalQueue(r, led, 3600)
    return s, r, st, led, q, AlpacaBroker(s, environ=KEYS, url_override=fake.url)


def test_one_order_per_symbol_despite_504_after_accept(tmp_path):
    md, fc, close = market_and_forecasts()
    with FakeAlpaca(cash=1_000_000.0) as fake:
        s, r, st, led, q, broker = _parts(tmp_path, fake)
        try:
            fake.plan("POST /v2/orders", "504_after_accept", 429)
            tr = LiveTrader(s, "alpaca-run", md, fc, broker, st, q, led, circuit_breakers=False)
            tr.run(start="2019-03-01", end="2019-03-01")  # a Friday: a rebalance session
            cids = [o["client_order_id"] for o in fake.orders.values()]
            assert len(cids) == s.portfolio.top_k and len(set(cids)) == len(cids)  # top-k buys, each exactly once
            assert all(cid.startswith("tl-") for cid in cids)
            assert "PKTESTKEY123" not in repr(broker) and "not-a-real-secret" not in repr(broker)
            # a restarted job re-running the same session sends nothing new
            fake.add_order("IBM", "buy", 5)  # an order placed by hand in Alpaca's UI
            tr2 = LiveTrader(s, "alpaca-run", md, fc, broker, st, q, led, circuit_breakers=False)
            with pytest.raises(ReconcileError, match="external"):
                tr2.start()  # an external order is reported, never adopted, and the job does not trade
            assert len([o for o in fake.orders.values() if o["client_order_id"].startswith("tl-")]) == s.portfolio.top_k
        finally:
            close_redis(r, shutdown=True)
