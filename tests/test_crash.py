"""Deterministic, exhaustive crash tests of the live job (issue: a crash between the ledger and the broker left a run
that could never restart). A short replay is killed (os._exit, as SIGKILL) right after its k-th ledger append, for
every k = 1..K, and right after the broker accepted its k-th order, for every k; each time it is restarted with the same
run_id. Every restart completes; no client_order_id reaches the broker twice; the ledger's positions equal the
broker's; the audit chain verifies; the final equity equals an uninterrupted run's."""
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from trading_lib.config import load_settings
from trading_lib.data.sources import EmbeddedSource, MarketData, to_panel
from trading_lib.execution.brokers import SimulatedBroker
from trading_lib.execution.simulated import CostModel
from trading_lib.live.approvals import ApprovalQueue
from trading_lib.live.audit import Ledger, verify
from trading_lib.live.state import LiveState, close_redis, connect_redis
from trading_lib.live.trader import FAULT_EXIT_CODE, LiveTrader

SYMS = ["AAPL", "JPM", "KO", "XOM"]
BARS = EmbeddedSource().bars(SYMS, "2019-01-01", "2019-02-28")
CLOSE = to_panel(BARS)
_mom = CLOSE.pct_change(10)
FC = (_mom.stack().rename("prediction").reset_index().rename(columns={"level_1": "symbol"}).dropna()
      .assign(horizon=20, confidence=0.5, model="momentum"))
START, END = "2019-02-04", "2019-02-19"  # two weekly decisions: every record boundary of a short run


def settings_for(tmp):
    return load_settings(environ={}).replace(
        approvals__max_notional=1e12, approvals__max_weight_change=1.0, approvals__min_confidence=0.0,
        redis__embedded_dir=str(Path(tmp) / "redis"), redis__appendfsync="everysec", portfolio__top_k=2, portfolio__rebalance="W")


def _run(tmp, env: dict):
    "Child process: one run of the live job (run_id 'crash') with the fault-injection variables in `env`."
    os.environ.update(env)
    s = settings_for(tmp)
    r = connect_redis(s, appendfsync=s.redis.appendfsync)
    led = Ledger(Path(tmp) / "ledger.sqlite")
    st = LiveState(r, ledger=led)
    if st.kill_switch() is None: st.release_kill_switch("test-supervisor", "test start")
    q = ApprovalQueue(r, led, s.approvals.expiry_seconds)
    b = SimulatedBroker.open(Path(tmp) / "broker.json", CostModel.from_settings(s.costs), s.execution.initial_cash)
    tr = LiveTrader(s, "crash", MarketData(BARS, None, None, {}, "test", None), FC, b, st, q, led, circuit_breakers=False)
    tr.run(start=START, end=END)
    os._exit(0)


def run(tmp, **env) -> int:
    p = mp.get_context("fork").Process(target=_run, args=(str(tmp), {k: str(v) for k, v in env.items()}))
    p.start(); p.join(120)
    assert not p.is_alive(), "the live job hung"
    return p.exitcode


def outcome(tmp):
    "(final equity, broker positions, ledger positions, ids sent to the broker, ledger ok, records)."
    b = SimulatedBroker.open(Path(tmp) / "broker.json")
    led = Ledger(Path(tmp) / "ledger.sqlite")
    pos = {}
    for rec in led.records(kind="fill"):
        p = rec.payload; pos[p["symbol"]] = pos.get(p["symbol"], 0.0) + (1 if p["side"] == "buy" else -1) * p["qty"]
    ledger_pos = {k: v for k, v in pos.items() if abs(v) > 1e-9}
    px = CLOSE.loc[:END].ffill().iloc[-1]
    equity = b.cash + sum(q * px[s] for s, q in b.positions().items())
    return equity, b.positions(), ledger_pos, list(b.orders), verify(led.path).ok, led


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    assert run(tmp) == 0
    eq, bpos, lpos, ids, ok, led = outcome(tmp)
    n_appends = sum(1 for _ in led.records())
    assert ok and len(ids) >= 3 and bpos, "the reference run must trade"
    close_redis(connect_redis(settings_for(tmp)), shutdown=True)
    return eq, n_appends, len(ids)


def check_restart(tmp, ref_equity, **fault):
    code = run(tmp, **fault)
    assert code in (0, FAULT_EXIT_CODE), f"the faulted run ended with {code}"
    assert run(tmp) == 0, f"the restart after {fault} failed"
    eq, bpos, lpos, ids, ok, _ = outcome(tmp)
    assert ok, "audit chain broken"
    assert len(ids) == len(set(ids))  # the simulated broker refuses a re-used id; this checks the record too
    assert set(bpos) == set(lpos) and all(abs(bpos[s] - lpos[s]) < 1e-6 for s in bpos), (bpos, lpos)
    np.testing.assert_allclose(eq, ref_equity, rtol=1e-9)
    close_redis(connect_redis(settings_for(tmp)), shutdown=True)
    return code


def test_crash_after_every_ledger_append_then_restart(tmp_path, reference):
    ref_equity, n_appends, _ = reference
    killed = 0
    for k in range(1, n_appends + 1):
        killed += check_restart(tmp_path / f"k{k}", ref_equity, TRADING_FAULT_AFTER_APPENDS=k) == FAULT_EXIT_CODE
    assert killed >= n_appends - 2  # every boundary of the run was actually hit


def test_crash_after_every_broker_acceptance_then_restart(tmp_path, reference):
    ref_equity, _, n_orders = reference
    for k in range(1, n_orders + 1):
        assert check_restart(tmp_path / f"s{k}", ref_equity, TRADING_FAULT_AFTER_SUBMITS=k) == FAULT_EXIT_CODE


def test_crash_before_every_ledger_commit_then_restart(tmp_path, reference):
    """Issue 12: a step's records are one ledger transaction, committed before each batch of broker submits or approval
    requests and at the end of the step. A crash just before any of these commits loses the uncommitted records (none of
    them reached the broker); the restart redoes the session and ends where the uninterrupted run ended."""
    ref_equity, _, _ = reference
    killed, k = 0, 1
    while check_restart(tmp_path / f"c{k}", ref_equity, TRADING_FAULT_BEFORE_COMMIT=k) == FAULT_EXIT_CODE:
        killed, k = killed + 1, k + 1
        assert k < 100, "more commits than an 11-session run can make"
    assert killed >= 13  # 11 sessions (a commit each; 18 February was a holiday) + one before each decision's submits
