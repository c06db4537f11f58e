"""AlpacaBroker through the REAL alpaca-py TradingClient against tests/fake_alpaca.py (a local HTTP server with fault
injection): idempotent submit under 429 / 5xx / 504-after-accept / timeout-after-accept / duplicate-id refusal,
bounded timeouts, no SDK re-POST, paper/live start-up checks, keys never logged, and reconcile with external orders.
Run: .venv/bin/python -m pytest -p no:nbval tests/test_alpaca_broker.py -q"""
import logging
import time

import pandas as pd
import pytest
from fake_alpaca import FakeAlpaca

from trading_lib.config import BrokerSettings, load_settings
from trading_lib.execution.brokers import (
    AlpacaBroker,
    Broker,
    BrokerConfigError,
    BrokerOrder,
    BrokerUnavailable,
    OrderNotCancelable,
    OrderNotFound,
    OrderRejected,
    OrderStatusUnknown,
    make_broker,
    reconcile,
)
from trading_lib.execution.orders import Order, OrderState

KEY, SECRET = "PKFAKEKEY7Q2W9", "fake-secret-do-not-log-93kd"
KEYS = {"ALPACA_API_KEY": KEY, "ALPACA_SECRET_KEY": SECRET}
LIVE_KEYS = {"ALPACA_API_KEY": "AKLIVEKEY7Q2W9", "ALPACA_SECRET_KEY": SECRET}
T0 = pd.Timestamp("2024-03-04 21:00", tz="UTC")
TIMEOUT = 0.5


def settings(**kw):
    return BrokerSettings(**{"timeout_seconds": TIMEOUT, "max_retries": 3, **kw})


def order(symbol="AAPL", side="buy", qty=10, intent="rebalance", **kw):
    return Order.create("run-test", T0, symbol, side, qty, intent=intent, **kw).mark_submitted()


@pytest.fixture
def fake():
    with FakeAlpaca(delay=TIMEOUT + 0.4) as f:
        yield f


@pytest.fixture
def broker(fake):
    b = AlpacaBroker(settings(), environ=KEYS, url_override=fake.url, backoff_seconds=0.01)
    yield b
    b.close()


def test_submit_plain_sends_our_id_and_parses(fake, broker):
    o = order()
    bo = broker.submit(o)
    assert isinstance(bo, BrokerOrder) and isinstance(broker, Broker)
    assert (bo.client_order_id, bo.symbol, bo.side, bo.qty, bo.status) == (o.client_order_id, "AAPL", "buy", 10.0, "accepted")
    post = [r for r in fake.requests if r["route"] == "POST /v2/orders"]
    assert len(post) == 1 and post[0]["body"]["client_order_id"] == o.client_order_id
    assert post[0]["body"]["type"] == "market" and post[0]["body"]["time_in_force"] == "day"
    assert post[0]["headers"]["APCA-API-KEY-ID"] == KEY  # the client authenticates; the broker never shows it
    assert len(fake.orders) == 1 and bo.broker_order_id in fake.orders


def test_429_then_success_gives_one_order(fake, broker):
    fake.plan("POST /v2/orders", 429)
    bo = broker.submit(order())
    assert fake.count("POST /v2/orders") == 2 and len(fake.orders) == 1
    assert bo.broker_order_id in fake.orders


def test_429_always_is_unavailable_and_nothing_accepted(fake, broker):
    fake.plan("POST /v2/orders", 429, 429, 429, 429)
    with pytest.raises(BrokerUnavailable, match="rate limited"):
        broker.submit(order())
    assert fake.count("POST /v2/orders") == 4 and len(fake.orders) == 0  # 1 + max_retries, no more


def test_500_is_looked_up_then_retried(fake, broker):
    fake.plan("POST /v2/orders", 500)
    bo = broker.submit(order())
    # 500 → outcome unknown → lookup (404) → same-id re-POST → accepted
    assert fake.count("POST /v2/orders") == 2 and fake.count("GET /v2/orders:by_client_order_id") == 1
    assert len(fake.orders) == 1 and bo.status == "accepted"


def test_504_after_accept_returns_the_stored_order_without_sdk_retry(fake, broker):
    fake.plan("POST /v2/orders", "504_after_accept")
    o = order()
    t = time.monotonic(); bo = broker.submit(o); dt = time.monotonic() - t
    assert len(fake.orders) == 1 and bo.broker_order_id in fake.orders
    assert fake.count("POST /v2/orders") == 1      # alpaca-py's own 3 s re-POST on 504 is disabled
    assert dt < 2.0
    assert bo.apply_to(o) == OrderState.SUBMITTED and o.broker_order_id == bo.broker_order_id


def test_timeout_after_accept_is_bounded_and_gives_one_order(fake, broker):
    fake.plan("POST /v2/orders", "timeout_after_accept")
    t = time.monotonic(); bo = broker.submit(order()); dt = time.monotonic() - t
    assert TIMEOUT <= dt < TIMEOUT + 1.5           # the client timeout fired, no hang
    assert len(fake.orders) == 1 and fake.count("POST /v2/orders") == 1
    assert bo.broker_order_id in fake.orders


def test_timeout_without_accept_retries_same_id(fake, broker):
    fake.plan("POST /v2/orders", "timeout")
    o = order(); bo = broker.submit(o)
    posts = [r for r in fake.requests if r["route"] == "POST /v2/orders"]
    assert len(posts) == 2 and {p["body"]["client_order_id"] for p in posts} == {o.client_order_id}
    assert len(fake.orders) == 1 and bo.client_order_id == o.client_order_id


def test_duplicate_id_refusal_is_looked_up(fake, broker):
    o = order()
    first = broker.submit(o)
    again = broker.submit(Order.create("run-test", T0, "AAPL", "buy", 10))  # a re-run job: same intent, same id
    assert again.broker_order_id == first.broker_order_id
    assert fake.count("POST /v2/orders") == 2 and len(fake.orders) == 1


def test_unknown_outcome_and_failed_lookup_raise_status_unknown(fake, broker):
    fake.plan("POST /v2/orders", "504_after_accept")
    fake.plan("GET /v2/orders:by_client_order_id", 500, 500, 500, 500)
    with pytest.raises(OrderStatusUnknown, match="keep it in flight"):
        broker.submit(order())
    assert fake.count("POST /v2/orders") == 1 and len(fake.orders) == 1  # never re-sent blind
    # later, reconciliation resolves it
    o = order(); assert broker.get_order(o.client_order_id).status == "accepted"


def test_5xx_every_time_ends_unknown_not_failed(fake, broker):
    fake.plan("POST /v2/orders", 503, 503, 503, 503)
    with pytest.raises(OrderStatusUnknown, match="outcome unknown after 4 attempts"):
        broker.submit(order())
    assert fake.count("POST /v2/orders") == 4 and len(fake.orders) == 0


def test_definitive_refusal_is_rejected_not_retried(fake, broker):
    fake.last_price["AAPL"] = 1e9
    with pytest.raises(OrderRejected, match="insufficient buying power") as ei:
        broker.submit(order())
    assert ei.value.status_code == 403 and fake.count("POST /v2/orders") == 1 and len(fake.orders) == 0


def test_account_positions_open_orders_cancel(fake, broker):
    fake.plan("GET /v2/account", 500)  # retried
    a = broker.account()
    assert (a.cash, a.equity, a.status) == (100_000.0, 100_000.0, "ACTIVE")
    b1, b2 = broker.submit(order("AAPL")), broker.submit(order("MSFT", "sell", 5))
    assert {o.client_order_id for o in broker.open_orders()} == {b1.client_order_id, b2.client_order_id}
    assert fake.requests[-1]["query"]["status"] == "open"
    fake.fill(200.0, b1.client_order_id)
    broker.cancel(b2.client_order_id)
    assert broker.get_order(b2.client_order_id).status == "canceled"
    assert [o.client_order_id for o in broker.open_orders()] == []
    with pytest.raises(OrderNotCancelable): broker.cancel(b1.client_order_id)
    with pytest.raises(OrderNotFound): broker.cancel("tl-nope-a0")
    assert broker.get_order("tl-nope-a0") is None
    fake.set_position("TSLA", -3, 100.0)
    assert broker.positions() == {"AAPL": 10.0, "TSLA": -3.0}
    a = broker.account()
    assert a.cash == pytest.approx(100_000 - 2000) and a.equity == pytest.approx(100_000 - 2000 + 2000 - 300)
    bo = broker.get_order(b1.client_order_id)
    assert (bo.status, bo.filled_qty, bo.filled_avg_price) == ("filled", 10.0, 200.0)


def test_get_calls_give_up_after_max_retries(fake, broker):
    fake.plan("GET /v2/positions", 502, 502, 502, 502)
    with pytest.raises(BrokerUnavailable, match="after 4 attempts"):
        broker.positions()


def test_reconcile_reports_external_order_and_missed_fill(fake, broker):
    o = order(); broker.submit(o)
    fake.plan("GET /v2/orders:by_client_order_id", ("fill", 150.0, o.client_order_id))  # it filled while the job was down
    ext = fake.add_order("NVDA", "buy", 2)                            # placed by hand in Alpaca's UI
    known = {o.client_order_id: o}
    rep = reconcile(broker, known, {})
    assert rep.changed == [(o.client_order_id, "submitted", "filled")] and o.state == OrderState.FILLED
    assert rep.expected_positions == {"AAPL": 10.0} == rep.broker_positions and not rep.position_diffs
    assert [x.client_order_id for x in rep.external_orders] == [ext["client_order_id"]]
    assert not rep.ok and ext["client_order_id"] not in known
    broker.cancel(ext["client_order_id"])
    assert reconcile(broker, known, {"AAPL": 10.0}).ok


def test_live_without_arming_refuses():
    with pytest.raises(BrokerConfigError, match="armed"):
        AlpacaBroker(settings(mode="live"), environ=LIVE_KEYS, url_override="http://127.0.0.1:9")
    with pytest.raises(Exception, match="live_armed"):
        load_settings(broker__mode="live", broker__name="alpaca")  # Settings itself refuses too


def test_key_mode_mismatch_refuses(fake):
    with pytest.raises(BrokerConfigError, match="a live key"):
        AlpacaBroker(settings(), environ=LIVE_KEYS, url_override=fake.url)
    with pytest.raises(BrokerConfigError, match="not 'AK'"):
        AlpacaBroker(settings(mode="live", live_armed=True), environ=KEYS, url_override=fake.url)
    with pytest.raises(BrokerConfigError, match="ALPACA_API_KEY and ALPACA_SECRET_KEY"):
        AlpacaBroker(settings(), environ={"ALPACA_API_KEY": KEY}, url_override=fake.url)
    live = AlpacaBroker(settings(mode="live", live_armed=True), environ=LIVE_KEYS, url_override=fake.url)
    assert live.paper is False and live.account().status == "ACTIVE"
    assert fake.requests[-1]["headers"]["APCA-API-KEY-ID"] == "AKLIVEKEY7Q2W9"


def test_keys_never_in_repr_str_errors_or_logs(fake, caplog):
    caplog.set_level(logging.DEBUG)
    b = AlpacaBroker(settings(), environ=KEYS, url_override=fake.url, backoff_seconds=0.01)
    fake.plan("POST /v2/orders", 429, "504_after_accept")
    fake.plan("GET /v2/account", 500)
    msgs = [repr(b), str(b), str(b.submit(order())), str(b.account())]
    fake.plan("POST /v2/orders", 503, 503, 503, 503)
    with pytest.raises(OrderStatusUnknown) as ei: b.submit(order(intent="other"))
    msgs.append(str(ei.value))
    for bad in ({"ALPACA_API_KEY": "AKX1", "ALPACA_SECRET_KEY": SECRET}, {"ALPACA_API_KEY": KEY}):
        with pytest.raises(BrokerConfigError) as ei: AlpacaBroker(settings(), environ=bad, url_override=fake.url)
        msgs.append(str(ei.value))
    assert "504" in caplog.text and "429" in caplog.text  # the retries were logged ...
    for text in [caplog.text, *msgs]:
        assert KEY not in text and SECRET not in text    # ... without the keys


def test_make_broker_alpaca(fake):
    s = load_settings(broker__name="alpaca", broker__timeout_seconds=TIMEOUT)
    b = make_broker(s, environ=KEYS, url_override=fake.url)
    assert isinstance(b, AlpacaBroker) and b._client._session.timeout == TIMEOUT and b._client._retry == 0
