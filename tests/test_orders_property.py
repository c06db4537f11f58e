"""Property tests of the order state machine (reliability.md checklist I5/I6, A6, B4, B8).

Random event sequences — local actions, broker statuses (known and unknown), fills (with duplicate deliveries,
conflicting re-reports and overfills) — are applied to one order; invariants are checked after every step."""
import json
import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trading_lib.execution.orders import (
    BROKER_STATUS_MAP,
    TERMINAL,
    Fill,
    FillConflict,
    InvalidTransition,
    Order,
    OrderError,
    OrderState,
    OverfillError,
    apply_broker_status,
    client_order_id,
    position_from_fills,
)

T0 = pd.Timestamp("2024-03-01 20:59:00", tz="UTC")
KNOWN = sorted(BROKER_STATUS_MAP)
UNKNOWN = ["pending_review", "teleported", "", "FILLED_MAYBE", "cancelled", "done"]
S = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# fill content is a function of the trade id, so re-using an id is a duplicate delivery; "conflict" changes it
FILL_BOOK = {f"T{i}": (q, p) for i, (q, p) in enumerate([(1.0, 10.0), (2.5, 10.5), (3.0, 9.75), (0.5, 11.0),
                                                         (4.0, 10.0), (10.0, 10.25), (2.0, 9.5)])}

event = st.one_of(
    st.tuples(st.just("local"), st.sampled_from(["request_approval", "approve", "reject_risk", "reject_supervisor",
                                                  "expire", "submit", "cancel"])),
    st.tuples(st.just("fill"), st.sampled_from(sorted(FILL_BOOK))),
    st.tuples(st.just("conflict"), st.sampled_from(sorted(FILL_BOOK))),
    st.tuples(st.just("overfill"), st.floats(0.01, 5.0)),
    st.tuples(st.just("status"), st.sampled_from(KNOWN + UNKNOWN),
              st.one_of(st.none(), st.floats(0, 12.0)), st.one_of(st.none(), st.floats(1.0, 20.0))),
)


def new_order(qty=10.0, side="buy"):
    return Order.create("run-prop", T0, "AAPL", side, qty, created_at=T0)


def apply(o, ev, step):
    at = T0 + pd.Timedelta(seconds=step + 1)
    kind = ev[0]
    if kind == "local":
        a = ev[1]
        if a == "request_approval": o.request_approval(at=at)
        elif a == "approve": o.approve("alice", at=at)
        elif a == "reject_risk": o.reject("risk:MAX_ORDER_NOTIONAL", at=at)
        elif a == "reject_supervisor": o.reject("supervisor:bob", at=at)
        elif a == "expire": o.expire(at=at)
        elif a == "submit": o.mark_submitted("b-1", at=at)
        elif a == "cancel": o.cancel(at=at)
    elif kind == "fill":
        q, p = FILL_BOOK[ev[1]]
        o.apply_fill(Fill(o.client_order_id, ev[1], q, p, timestamp=at), at=at)
    elif kind == "conflict":
        q, p = FILL_BOOK[ev[1]]
        o.apply_fill(Fill(o.client_order_id, ev[1], q + 0.25, p, timestamp=at), at=at)
    elif kind == "overfill":
        # a real fill first replaces inferred fills, so only quantity beyond remaining + inferred overfills
        q = o.remaining_qty + sum(f.qty for f in o.fills if f.inferred) + ev[1]
        o.apply_fill(Fill(o.client_order_id, f"OF{step}", q, 10.0, timestamp=at), at=at)
    elif kind == "status":
        apply_broker_status(o, ev[1], filled_qty=ev[2], avg_price=ev[3], at=at)


def snapshot(o):
    d = o.to_dict(); d.pop("alerts")
    return json.dumps(d, sort_keys=True)


def check_invariants(o):
    o.check_invariants()
    fsum = math.fsum(f.qty for f in o.fills)
    assert 0.0 <= o.filled_qty <= o.qty
    assert math.isclose(o.filled_qty, min(fsum, o.qty), rel_tol=0, abs_tol=1e-9)
    # position = sum of signed fills
    assert math.isclose(position_from_fills([o]).get("AAPL", 0.0), o.sign * fsum, abs_tol=1e-9)
    assert math.isclose(o.signed_filled_qty, o.sign * o.filled_qty, abs_tol=1e-12)
    if o.fills:
        lo, hi = min(f.price for f in o.fills), max(f.price for f in o.fills)
        assert lo - 1e-9 <= o.avg_fill_price <= hi + 1e-9
    assert (o.state == OrderState.FILLED) == (fsum >= o.qty * (1 - 1e-9))
    assert len({f.trade_id for f in o.fills}) == len(o.fills)


def run(events, qty=10.0, side="buy"):
    o = new_order(qty, side)
    for i, ev in enumerate(events):
        before_state, before = o.state, snapshot(o)
        known = {f.trade_id: (f.qty, f.price) for f in o.fills}
        try:
            apply(o, ev, i)
            raised = None
        except (InvalidTransition, OrderError) as e:
            raised = e
        if raised is not None:  # a refused event changes nothing
            assert snapshot(o) == before, (ev, raised)
        if before_state in TERMINAL:  # absorbing: state and fills never change again
            assert o.state == before_state and snapshot(o) == before, ev
        if ev[0] == "status" and ev[1] not in BROKER_STATUS_MAP:  # unknown statuses never change anything
            assert o.state == before_state and snapshot(o) == before and raised is None, ev
        if ev[0] in ("overfill",) and before_state not in TERMINAL:
            assert isinstance(raised, (OverfillError, InvalidTransition)), ev
        if ev[0] in ("fill", "conflict") and ev[1] in known:
            q, p = FILL_BOOK[ev[1]]
            if known[ev[1]] == ((q + 0.25) if ev[0] == "conflict" else q, p):  # duplicate delivery: idempotent
                assert raised is None and snapshot(o) == before, ev
            else:  # same trade id, other content: refused
                assert isinstance(raised, FillConflict), ev
        check_invariants(o)
    return o


@S
@given(st.lists(event, max_size=25), st.sampled_from([10.0, 3.0, 12.5]), st.sampled_from(["buy", "sell"]))
def test_random_event_sequences_keep_invariants(events, qty, side):
    o = run(events, qty, side)
    # replaying the same events gives the same state (deterministic, I5)
    o2 = run(events, qty, side)
    assert snapshot(o2) == snapshot(o)


@S
@given(st.lists(event, max_size=15))
def test_duplicate_fill_is_idempotent(events):
    o = run(events)
    if o.fills:
        f = o.fills[-1]
        before = snapshot(o)
        assert o.apply_fill(f) is False
        assert snapshot(o) == before


# ---- valid sequences reach the expected terminal state ------------------------------------------------------------
@st.composite
def valid_path(draw):
    qty = draw(st.sampled_from([10.0, 7.0, 100.0]))
    with_approval = draw(st.booleans())
    n = draw(st.integers(1, 5))
    cuts = sorted(draw(st.lists(st.integers(1, 999), min_size=n - 1, max_size=n - 1, unique=True)))
    parts = [b - a for a, b in zip([0] + cuts, cuts + [1000])]
    fills = [(f"E{i}", qty * p / 1000, 10.0 + i) for i, p in enumerate(parts)]
    ending = draw(st.sampled_from(["fill_all", "cancel_after_some", "broker_reject", "supervisor_reject", "expire",
                                   "risk_reject"]))
    noise = draw(st.lists(st.tuples(st.integers(0, 10), st.sampled_from(["dup", "unknown", "inflight"])), max_size=6))
    return qty, with_approval, fills, ending, noise


@S
@given(valid_path())
def test_valid_sequences_reach_expected_terminal_state(path):
    qty, with_approval, fills, ending, noise = path
    o = new_order(qty)
    if with_approval:
        o.request_approval(at=T0)
        if ending == "supervisor_reject":
            o.reject("supervisor:bob"); assert (o.state, o.reason) == (OrderState.REJECTED, "supervisor:bob"); return
        if ending == "expire":
            o.expire(); assert o.state == OrderState.EXPIRED and o.filled_qty == 0; return
        o.approve("alice")
    if ending == "risk_reject":
        o.reject("risk:PRICE_COLLAR"); assert (o.state, o.reason) == (OrderState.REJECTED, "risk:PRICE_COLLAR"); return
    o.mark_submitted("b-1")
    if ending == "broker_reject":
        apply_broker_status(o, "rejected"); assert (o.state, o.reason) == (OrderState.REJECTED, "broker:rejected"); return
    if ending in ("supervisor_reject", "expire"):  # drawn without approval: plain fill_all instead
        ending = "fill_all"
    todo = fills if ending == "fill_all" else fills[:-1]
    noise = dict(noise)
    applied = []
    for i, (tid, q, p) in enumerate(todo):
        f = Fill(o.client_order_id, tid, q, p)
        assert o.apply_fill(f) is True
        applied.append(f)
        extra = noise.get(i)
        if extra == "dup": assert o.apply_fill(f) is False
        elif extra == "unknown": st_before = o.state; apply_broker_status(o, "mystery"); assert o.state == st_before
        elif extra == "inflight" and not o.is_terminal: apply_broker_status(o, "pending_cancel")
    if ending == "fill_all":
        assert o.state == OrderState.FILLED
        assert math.isclose(o.filled_qty, qty, rel_tol=1e-12)
        assert apply_broker_status(o, "filled") == OrderState.FILLED  # the broker's confirmation is a no-op
    else:
        apply_broker_status(o, "canceled")
        assert o.state == OrderState.CANCELLED and o.reason == "broker:canceled"
        assert math.isclose(o.filled_qty, sum(f.qty for f in applied), rel_tol=1e-12)
        assert o.filled_qty < qty
        r = o.reissue()
        assert r.attempt == 1 and r.client_order_id != o.client_order_id
        assert math.isclose(r.qty, qty - o.filled_qty, rel_tol=1e-9)
    with pytest.raises(InvalidTransition):
        o.apply_fill(Fill(o.client_order_id, "LATE", 0.001, 10.0))


@S
@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=10).filter(str.strip),
       st.text(min_size=1, max_size=12).filter(str.strip), st.integers(0, 10**6),
       st.datetimes(timezones=st.just(__import__("datetime").timezone.utc)))
def test_client_order_id_deterministic_and_safe(run_id, symbol, intent, attempt, ts):
    if not run_id.strip():
        return
    a = client_order_id(run_id, ts, symbol, intent, attempt)
    assert a == client_order_id(run_id, pd.Timestamp(ts).tz_convert("Asia/Tokyo"), symbol, intent, attempt)
    assert len(a) <= 48 and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in a)
    assert a != client_order_id(run_id, ts, symbol, intent, attempt + 1)
