"""Approval queue and supervisor CLI (trading_lib.live.approvals): racing approvals (exactly one wins, threads and
processes), expiry on a fake clock, identity in the ledger, ledger failure, and `trading-lib approvals` /
`trading-lib kill-switch` run in-process (reliability.md checklist F2, F7, F8, G6)."""
import json
import multiprocessing as mp
import threading
import time

import pytest

from trading_lib.cli import main as cli
from trading_lib.config import Settings
from trading_lib.execution.orders import Order, OrderState
from trading_lib.live.approvals import ApprovalError, ApprovalPolicy, ApprovalQueue, default_ledger_path
from trading_lib.live.audit import Ledger
from trading_lib.live.state import LiveState, start_embedded

T0 = 1_700_000_000.0


@pytest.fixture
def env(server, tmp_path):
    clock = [T0]
    led = Ledger(tmp_path / "ledger.jsonl")
    q = ApprovalQueue(server.client(), led, expiry_seconds=300, clock=lambda: clock[0])
    return server, q, led, clock


def order(sym="AAPL", qty=100, day=1):
    return Order.create("run1", f"2024-03-{day:02d}T21:00:00+00:00", sym, "buy", qty)


def approvals_in_ledger(led, cid=None, status=None):
    return [r.payload for r in led.records(kind="approval")
            if (cid is None or r.payload["client_order_id"] == cid) and (status is None or r.payload["status"] == status)]


def test_policy_thresholds():
    s = Settings().replace(approvals__max_notional=1000, approvals__max_weight_change=0.1,
                           approvals__min_confidence=0.2, approvals__first_trade_requires_approval=True)
    p, o = ApprovalPolicy(s.approvals), order()
    assert p.needs_approval(o, 999.99, 0.0999, 0.2) == []
    assert p.needs_approval(o, 1000.01, 0.0, 0.5) == ["notional 1,000.01 > max_notional 1,000.00"]
    assert p.needs_approval(o, 0, -0.11, 0.5) == ["|weight change| 0.1100 > max_weight_change 0.1000"]
    assert p.needs_approval(o, 0, 0, 0.19) == ["confidence 0.1900 < min_confidence 0.2000"]
    assert p.needs_approval(o, 0, 0, None) == ["forecast confidence missing (None)"]
    assert p.needs_approval(o, 0, 0, 0.5, first_trade=True) == ["first trade in AAPL"]
    assert len(p.needs_approval(o, 5000, 0.5, 0.0, first_trade=True)) == 4
    with pytest.raises(ValueError, match=r"\(AAPL\): weight_change must be a finite number"):
        p.needs_approval(o, 0, float("nan"), 0.5)


def test_submit_list_and_idempotency(env):
    _, q, led, clock = env
    o = order()
    req = q.submit(o, ["notional 1 > 0"], {"forecast": 0.01, "confidence": 0.3, "notional": 19_000.0, "weight_change": 0.02})
    assert (req.status, req.created, req.expires_at, req.order.state) == ("pending", T0, T0 + 300, OrderState.PENDING_APPROVAL)
    assert req.context["confidence"] == 0.3 and req.reasons == ["notional 1 > 0"]
    clock[0] += 10
    assert q.submit(o, ["other"], {}).created == T0  # the same order again: unchanged, nothing written
    assert len(approvals_in_ledger(led)) == 1
    assert [r.client_order_id for r in q.list()] == [o.client_order_id]
    d = req.to_dict()
    assert d["symbol"] == "AAPL" and d["expires_iso"] == "2023-11-14T22:18:20+00:00"
    json.dumps(d)
    with pytest.raises(ValueError, match="reasons must be a non-empty list"):
        q.submit(order("MSFT"), [], {})
    with pytest.raises(Exception, match="nan"):
        q.submit(order("MSFT"), ["x"], {"confidence": float("nan")})
    assert q.r.exists("tl:approval:" + order("MSFT").client_order_id) == 0
    sent = order("NVDA"); sent.mark_submitted()
    with pytest.raises(ApprovalError, match="only new orders"):
        q.submit(sent, ["x"], {})


def test_identity_required_and_recorded(env):
    _, q, led, clock = env
    o = order()
    q.submit(o, ["big"], {})
    for who in ["", "  ", None]:
        with pytest.raises(ValueError, match="identity is required"):
            q.approve(o.client_order_id, who)
    with pytest.raises(ValueError, match="reason is required"):
        q.reject(o.client_order_id, "bob", " ")
    assert q.decision(o.client_order_id) == "pending" and len(approvals_in_ledger(led)) == 1
    clock[0] += 5
    req = q.approve(o.client_order_id, "alice@desk")
    assert (req.decided_by, req.decided_at, req.order.approved_by) == ("alice@desk", T0 + 5, "alice@desk")
    [rec] = approvals_in_ledger(led, o.client_order_id, "approved")
    assert (rec["by"], rec["symbol"], rec["qty"], rec["at"]) == ("alice@desk", "AAPL", 100.0, "2023-11-14T22:13:25+00:00")
    assert q.get(o.client_order_id).ledger_seq == 1
    ev = [e.data for e in LiveState(q.r).events(kinds=("approval",))]
    assert [(e["status"], e.get("by")) for e in ev] == [("pending", None), ("approved", "alice@desk")]


def test_thread_race_exactly_one_wins(env):
    server, q, led, clock = env
    o = order()
    q.submit(o, ["big"], {})
    n, barrier, results = 16, threading.Barrier(16), []

    def go(i):
        mine = ApprovalQueue(server.client(), led, 300, clock=lambda: clock[0])
        barrier.wait()
        try:
            if i % 2: mine.approve(o.client_order_id, f"sup{i}")
            else: mine.reject(o.client_order_id, f"sup{i}", "no")
            results.append(("won", i))
        except ApprovalError as e:
            results.append(("lost", str(e)))

    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in ts: t.start()
    for t in ts: t.join()
    won = [i for k, i in results if k == "won"]
    assert len(won) == 1 and len(results) == n
    final = q.get(o.client_order_id)
    assert final.decided_by == f"sup{won[0]}" and final.status == ("approved" if won[0] % 2 else "rejected")
    assert all(f"not pending: already {final.status} by sup{won[0]}" in m for k, m in results if k == "lost")
    assert len([p for p in approvals_in_ledger(led, o.client_order_id) if p["status"] != "pending"]) == 1


def _proc_approve(sock, ledger_path, cid, i, start_at, out):
    import redis as _r

    from trading_lib.live.state import _no_retry_kwargs
    q = ApprovalQueue(_r.Redis(unix_socket_path=sock, **_no_retry_kwargs(5, 2)), Ledger(ledger_path), 300, clock=lambda: T0)
    while time.time() < start_at: pass
    try:
        q.approve(cid, f"proc{i}"); out.put(("won", i))
    except ApprovalError as e:
        out.put(("lost", str(e)))


def test_process_race_exactly_one_wins(env):
    server, q, led, clock = env
    o = order()
    q.submit(o, ["big"], {})
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.5
    ps = [ctx.Process(target=_proc_approve, args=(server.socket, str(led.path), o.client_order_id, i, start_at, out))
          for i in range(6)]
    for p in ps: p.start()
    res = [out.get(timeout=20) for _ in ps]
    for p in ps: p.join(10)
    won = [i for k, i in res if k == "won"]
    assert len(won) == 1, res
    assert all(f"already approved by proc{won[0]}" in m for k, m in res if k == "lost")
    assert [p["by"] for p in approvals_in_ledger(led, o.client_order_id, "approved")] == [f"proc{won[0]}"]


def test_expiry_with_fake_clock(env):
    _, q, led, clock = env
    a, b, c = order("AAPL"), order("MSFT"), order("NVDA")
    q.submit(a, ["x"], {}); clock[0] += 100
    q.submit(b, ["x"], {}); clock[0] += 100
    q.submit(c, ["x"], {})
    clock[0] = T0 + 299.999
    assert q.expire_due() == []
    q.approve(a.client_order_id, "alice")  # just in time
    clock[0] = T0 + 300 + 100  # b expires exactly now, c not yet
    with pytest.raises(ApprovalError, match="expired at 2023-11-14T22:20:00.*approved by bob refused"):
        q.approve(b.client_order_id, "bob")
    assert q.get(b.client_order_id).status == "expired" and q.get(b.client_order_id).order.state == OrderState.EXPIRED
    with pytest.raises(ApprovalError, match="not pending: already expired by system:expiry"):
        q.reject(b.client_order_id, "bob", "late")
    assert q.decision(c.client_order_id) == "pending"
    clock[0] = T0 + 500
    assert q.expire_due() == [c.client_order_id]
    assert q.expire_due() == []  # recorded once
    assert q.decision(a.client_order_id) == "approved"
    assert [r.client_order_id for r in q.list("expired")] == [b.client_order_id, c.client_order_id]
    exp = approvals_in_ledger(led, status="expired")
    assert [(p["symbol"], p["by"], p.get("attempted_by")) for p in exp] == [("MSFT", "system:expiry", "bob"),
                                                                           ("NVDA", "system:expiry", None)]
    # decision() itself expires an overdue request
    d = order("TSLA"); q.submit(d, ["x"], {})
    clock[0] += 301
    assert q.decision(d.client_order_id) == "expired"


def test_unknown_id(env):
    _, q, _, _ = env
    with pytest.raises(ApprovalError, match="no approval request for order tl-x"):
        q.approve("tl-x", "alice")
    with pytest.raises(ApprovalError, match="no approval request"):
        q.decision("tl-x")


def test_ledger_failure_undoes_the_decision(env, tmp_path):
    server, q, led, clock = env
    o = order()
    q.submit(o, ["big"], {})
    with open(led.path, "ab") as f:
        f.write(b'{"torn')
    bad = ApprovalQueue(server.client(), Ledger(led.path), 300, clock=lambda: clock[0])
    with pytest.raises(ApprovalError, match="NOT recorded"):
        bad.approve(o.client_order_id, "alice")
    assert q.decision(o.client_order_id) == "pending" and q.get(o.client_order_id).decided_by is None
    with pytest.raises(Exception, match="torn"):
        bad.submit(order("MSFT"), ["x"], {})
    assert [r.client_order_id for r in q.list()] == [o.client_order_id]  # the failed submit left nothing


# ---------------------------------------------------------------- the command line, in-process


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADING_REDIS__EMBEDDED_DIR", str(tmp_path / "redis"))
    monkeypatch.delenv("REDIS_URL", raising=False)
    yield tmp_path
    from trading_lib.live.state import stop_embedded
    stop_embedded(tmp_path / "redis", force=True)  # CLI calls leave the long-lived server running: stop it


def run(capsys, *argv):
    rc = cli(list(argv))
    o = capsys.readouterr()
    return rc, o.out, o.err


def test_cli_approvals(cli_env, capsys):
    emb = start_embedded(cli_env / "redis")  # the live job's server
    try:
        q = ApprovalQueue(emb.client(), Ledger(cli_env / "ledger.sqlite"), 3600)
        a, b = order("AAPL", 2000), order("MSFT", 10)
        q.submit(a, ["notional 380,000.00 > max_notional 250,000.00"], {"notional": 380000})
        q.submit(b, ["first trade in MSFT"], {})
        rc, out, _ = run(capsys, "approvals", "list")
        assert rc == 0 and a.client_order_id in out and b.client_order_id in out and "first trade in MSFT" in out
        rc, out, _ = run(capsys, "approvals", "list", "--json")
        assert rc == 0 and {json.loads(l)["symbol"] for l in out.splitlines()} == {"AAPL", "MSFT"}
        rc, out, _ = run(capsys, "approvals", "approve", a.client_order_id, "--as", "carol")
        assert rc == 0 and out.startswith(f"approved: {a.client_order_id}") and "by carol" in out
        rc, _, err = run(capsys, "approvals", "approve", a.client_order_id, "--as", "dave")
        assert rc == 1 and "not pending: already approved by carol" in err
        rc, _, err = run(capsys, "approvals", "reject", b.client_order_id, "--reason", "news due")
        assert rc == 1 and "--as NAME is required" in err  # no default name: every action names a person (issue 16 #12)
        assert q.get(b.client_order_id).status == "pending"
        rc, out, _ = run(capsys, "approvals", "reject", b.client_order_id, "--reason", "news due", "--as", "erin")
        assert rc == 0 and "by erin" in out
        with pytest.raises(SystemExit):
            cli(["approvals", "reject", b.client_order_id])  # --reason is required
        capsys.readouterr()
        rc, _, err = run(capsys, "approvals", "approve", "tl-missing", "--as", "erin")
        assert rc == 1 and "no approval request" in err
        rc, out, _ = run(capsys, "approvals", "list", "--status", "all")
        assert "[approved]" in out and "[rejected]" in out
        led = Ledger(cli_env / "ledger.sqlite")
        assert [(p["symbol"], p["status"], p.get("by")) for p in approvals_in_ledger(led) if p["status"] != "pending"] == \
            [("AAPL", "approved", "carol"), ("MSFT", "rejected", "erin")]
        assert emb.client().ping()  # the CLI did not stop the live job's server
    finally:
        emb.shutdown()


def test_cli_kill_switch_starts_the_server_on_demand_and_leaves_it_running(cli_env, capsys):
    rc, out, _ = run(capsys, "kill-switch", "status")
    assert rc == 0 and "no record" in out and "can trade: no" in out
    rc, _, err = run(capsys, "kill-switch", "engage", "--as", "erin")
    assert rc == 1 and "needs --reason" in err
    rc, out, _ = run(capsys, "kill-switch", "engage", "--reason", "drill", "--as", "erin")
    assert rc == 0 and "ENGAGED by erin" in out
    from trading_lib.live.state import embedded_status
    st = embedded_status(cli_env / "redis")
    assert st["running"] and not st["in_use"]  # started on demand, left running for others, no longer held (issue 16.5)
    assert run(capsys, "redis", "stop")[0] == 0 and not embedded_status(cli_env / "redis")["running"]  # stopped on purpose ...
    rc, out, _ = run(capsys, "kill-switch", "status")  # ... and the AOF brought the state back
    assert "ENGAGED by erin" in out and "can trade: no" in out
    rc, out, _ = run(capsys, "kill-switch", "release", "--reason", "drill over", "--as", "frank")
    assert rc == 0 and "released by frank" in out
    led = Ledger(default_ledger_path(Settings().replace(redis__embedded_dir=str(cli_env / "redis"))))
    assert [(r.payload["engaged"], r.payload["by"]) for r in led.records(kind="kill_switch")] == [(True, "erin"), (False, "frank")]


def test_cli_redis_unreachable(cli_env, capsys, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://:pw@127.0.0.1:1/0")
    rc, _, err = run(capsys, "approvals", "list")
    assert rc == 3 and "cannot reach the live state" in err and "pw@" not in err
