"""The live job through `trading-lib run live` (issue 16, items 4 and 14): Redis dying mid-session halts the job
cleanly (a `state` record in the ledger, a clear message, exit code 3) and a rerun resumes with nothing lost; each run
anchors the ledger's head in its metrics.json and the next job refuses a ledger whose tail was cut (exit code 4)."""
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_live import SYMS, market_and_forecasts

from trading_lib.cli import main
from trading_lib.live.audit import Ledger, verify
from trading_lib.live.state import start_embedded

WINDOW = ["-p", "start", "2019-01-02", "-p", "end", "2019-02-28", "-p", "approval_max_weight_change", "1.0",
          "-p", "approval_min_confidence", "0.0", "--no-progress"]


@pytest.fixture
def project(project_copy, monkeypatch):
    "A project with a train run of look-ahead-free momentum forecasts (stand-ins for model forecasts)."
    _, fc, _ = market_and_forecasts("2018-09-01", "2019-03-29")
    d = project_copy / "runs" / "train" / "momentum"
    d.mkdir(parents=True)
    fc.to_parquet(d / "forecasts.parquet")
    (d / "metrics.json").write_text(json.dumps({"run": {"parameters": {"symbols": SYMS, "start": "2018-09-01",
                                                                        "end": "2019-03-29", "top_k": 3}}}))
    monkeypatch.chdir(project_copy)
    for k in [k for k in os.environ if k.startswith("TRADING_")] + ["REDIS_URL"]: monkeypatch.delenv(k, raising=False)
    yield project_copy
    start_embedded(project_copy / "runs" / "live" / "redis").shutdown()


def _run(project, run_id, *extra):
    return main(["run", "live", "-p", "forecasts_from", str(project / "runs" / "train" / "momentum"),
                 "-p", "run_id", run_id, *WINDOW, *extra])


def test_redis_dies_mid_session_halts_with_exit_3_then_resumes(project, capfd):
    led_path = project / "runs" / "live" / "ledger.sqlite"
    redis_dir = project / "runs" / "live" / "redis"
    # every order waits for a supervisor: the job sits in a known place (its approval wait) when Redis dies
    codes = []
    th = threading.Thread(target=lambda: codes.append(_run(project, "r1", "-p", "approval_max_notional", "1.0",
                                                            "-p", "approval_wait_seconds", "120")))
    th.start()
    deadline = time.time() + 240
    probe = start_embedded(redis_dir).client()
    stable, last = 0, None
    while time.time() < deadline and stable < 3 and th.is_alive():  # every ledger request is queued, for 0.6 s
        led_ids = {r.payload["order"]["client_order_id"] for r in Ledger(led_path).records(kind="order")
                   if r.payload.get("action") == "pending_approval"} if led_path.exists() else set()
        queued = set(probe.zrange("tl:approvals", 0, -1))
        now = (frozenset(led_ids), frozenset(queued))
        stable = stable + 1 if led_ids and led_ids == queued and now == last else 0
        last = now
        time.sleep(0.2)
    probe.close()
    assert stable >= 3, "the job should be waiting for approvals"
    pending = sorted(last[0])
    pid = json.loads((redis_dir / "server.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)  # Redis dies while the job waits
    th.join(240)
    assert codes == [3]
    err = capfd.readouterr().err
    assert "HALTED (exit 3)" in err and "live run r1 HALTED at session 2019-01-" in err and "run_id=r1" in err, err[-2000:]
    halts = [r.payload for r in Ledger(led_path).records(kind="state") if r.payload.get("halted")]
    assert len(halts) == 1 and halts[0]["cause"] == "state_unavailable" and halts[0]["run_id"] == "r1"
    assert "ConnectionError" in halts[0]["error"]
    n_before = len(list(Ledger(led_path).records()))
    # Redis back from its AOF, but one request lost (as when Redis dies between the ledger's record and the queue)
    r = start_embedded(redis_dir).client()
    assert set(r.zrange("tl:approvals", 0, -1)) == set(pending)  # appendfsync always: nothing acknowledged was lost
    r.delete(f"tl:approval:{pending[0]}"); r.zrem("tl:approvals", pending[0]); r.close()
    # the rerun with the same run_id: Redis comes back from its AOF on demand, the run resumes and completes
    assert _run(project, "r1", "-p", "approval_max_notional", "1e12") == 0
    assert verify(led_path).ok
    recs = list(Ledger(led_path).records())
    assert len(recs) > n_before
    from trading_lib.execution.brokers import SimulatedBroker
    broker = SimulatedBroker.open(project / "runs" / "live" / "state" / "r1" / "broker.json").to_dict()
    sent = [r.payload["order"]["client_order_id"] for r in recs if r.kind == "order" and r.payload.get("action") == "send"]
    assert len(sent) == len(set(sent))  # nothing sent twice
    assert set(broker["orders"]) == set(sent)  # every order the ledger sent, the broker has, and no other
    lost = [r.payload["order"] for r in recs if r.kind == "order" and r.payload.get("action") == "approval_request_lost"]
    assert [(o["client_order_id"], o["state"], o["reason"]) for o in lost] == \
        [(pending[0], "expired", "supervisor:approval_request_lost")]
    m = json.loads(next((project / "runs" / "live").glob("*/metrics.json")).read_text())
    assert m["run"]["run_id"] == "r1" and m["reconciliation"]["ok"]


def test_next_job_refuses_a_ledger_whose_tail_was_cut(project, capfd):
    led_path = project / "runs" / "live" / "ledger.sqlite"
    assert _run(project, "a1", "-p", "max_sessions", "15") == 0
    m = json.loads(next((project / "runs" / "live").glob("*/metrics.json")).read_text())
    seq, h = m["ledger"]["head"].split(":")
    assert (int(seq), h) == Ledger(led_path).head() and int(seq) > 20
    con = sqlite3.connect(led_path)  # someone removes the last records (and the append-only trigger first)
    con.execute("DROP TRIGGER ledger_no_delete"); con.execute("DELETE FROM ledger WHERE seq > ?", (int(seq) - 5,))
    con.commit(); con.close()
    assert verify(led_path).ok  # the chain alone cannot tell
    capfd.readouterr()
    assert _run(project, "a2", "-p", "max_sessions", "15") == 4
    err = capfd.readouterr().err
    assert "FAILED (exit 4)" in err and "LedgerHeadMismatch" in err and f"recorded head {seq}:" in err, err[-2000:]
    assert not any(r.payload.get("order", {}).get("run_id") == "a2" for r in Ledger(led_path).records(kind="order"))
