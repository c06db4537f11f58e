"""The embedded Redis as one long-lived service (issue 16, item 5): concurrent CLI calls from separate processes never
pull the server from under each other, and the kill switch in Redis always equals the ledger's last record; an
orphaned server left by a killed job is reused, never duplicated."""
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from trading_lib.cli import main
from trading_lib.config import load_settings
from trading_lib.execution.orders import Order
from trading_lib.live.approvals import ApprovalQueue
from trading_lib.live.audit import Ledger
from trading_lib.live.state import LiveState, close_redis, connect_redis, start_embedded

ROUNDS = 50


def _servers(d: Path) -> list[int]:
    "Live redis-server processes serving directory `d` (Redis changes into its dir)."
    out = []
    for p in psutil.process_iter(["name"]):
        try:
            if "redis-server" in (p.info["name"] or "") and p.status() != psutil.STATUS_ZOMBIE and Path(p.cwd()) == d.resolve():
                out.append(p.pid)
        except psutil.Error:
            continue
    return out


def _child(argv, out_path, barrier):
    "One CLI call in its own (forked) process: wait for the others, run `trading-lib ARGV`, exit with its code."
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1); os.dup2(fd, 2)
    try:
        barrier.wait(30)
        code = main(argv)
    except BaseException as e:  # noqa: BLE001 - any escape is a failure of the round; report it
        print(f"{type(e).__name__}: {e}", file=sys.stderr); code = 99
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 98)


def test_concurrent_cli_calls_share_one_server(tmp_path, monkeypatch):
    d = tmp_path / "redis"
    led_path = tmp_path / "ledger.sqlite"
    monkeypatch.setenv("TRADING_REDIS__EMBEDDED_DIR", str(d))
    monkeypatch.delenv("REDIS_URL", raising=False)
    s = load_settings()
    ctx = mp.get_context("fork")
    lg = ["--ledger", str(led_path)]
    failures = []
    t0 = time.perf_counter()
    try:
        for i in range(ROUNDS):
            # a pending approval for this round (written by the "live job"), then the server stopped on even rounds so
            # that the round's calls race to start it
            r = connect_redis(s)
            led = Ledger(led_path)
            o = Order.create("race", f"{2000 + i}-01-03T21:00:00+00:00", "AAPL", "buy", i + 1)
            ApprovalQueue(r, led, 3600).submit(o, ["test"], {})
            led.close()
            close_redis(r, shutdown=(i % 2 == 0))
            calls = [["kill", "engage", "--reason", f"round {i}", "--as", "alice"] + lg,
                     ["kill", "release", "--reason", f"round {i}", "--as", "bob"] + lg,
                     ["kill", "status"] + lg, ["kill", "status"] + lg,
                     ["approvals", "approve", o.client_order_id, "--as", "carol"] + lg]
            barrier = ctx.Barrier(len(calls))
            procs = []
            for j, argv in enumerate(calls):
                p = ctx.Process(target=_child, args=(argv, str(tmp_path / f"out{j}.txt"), barrier))
                p.start(); procs.append(p)
            for p in procs: p.join(60)
            for j, (argv, p) in enumerate(zip(calls, procs)):
                if p.exitcode != 0:
                    failures.append((i, " ".join(argv[:2]), p.exitcode, (tmp_path / f"out{j}.txt").read_text()[-300:]))
            # the switch in Redis equals the ledger's last kill_switch record; the approval is approved in both
            r = connect_redis(s)
            led = Ledger(led_path)
            ks = LiveState(r).kill_switch()
            last = list(led.records(kind="kill_switch"))[-1].payload
            if ks is None or (ks.engaged, ks.by, ks.reason) != (last["engaged"], last["by"], last["reason"]):
                failures.append((i, "switch", ks, last))
            q = ApprovalQueue(r, led, 3600).get(o.client_order_id)
            recs = [x.payload for x in led.records(kind="approval") if x.payload["client_order_id"] == o.client_order_id]
            if (q.status, q.decided_by) != ("approved", "carol") or recs[-1]["status"] != "approved":
                failures.append((i, "approval", q.status, recs[-1]))
            led.close()
            close_redis(r)
            assert len(_servers(d)) <= 1
        print(f"{ROUNDS} rounds of {len(calls)} concurrent CLI processes in {time.perf_counter() - t0:.1f} s")
        assert failures == [], f"{len(failures)} failures in {ROUNDS} rounds, first: {failures[:3]}"
    finally:
        start_embedded(d).shutdown()


ORPHAN = """
import os, signal
from trading_lib.config import load_settings
from trading_lib.live.state import connect_redis, LiveState
r = connect_redis(load_settings(redis__embedded_dir={d!r}), environ={{}})
LiveState(r).engage_kill_switch("job", "before the crash")
print(r.embedded.pid, r.embedded.owner, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the job is killed: its server stays behind
"""


def test_orphan_of_a_killed_job_is_reused_and_never_duplicated(tmp_path, monkeypatch):
    d = tmp_path / "redis"
    monkeypatch.setenv("TRADING_REDIS__EMBEDDED_DIR", str(d))
    monkeypatch.delenv("REDIS_URL", raising=False)
    p = subprocess.run([sys.executable, "-c", ORPHAN.format(d=str(d))], capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == -signal.SIGKILL, p.stderr
    pid, owner = p.stdout.split()
    pid = int(pid)
    assert owner == "True" and _servers(d) == [pid]  # the orphan
    try:
        assert main(["redis", "status"]) == 0
        (d / "server.json").unlink()  # the pidfile is lost as well
        assert main(["kill", "status", "--ledger", str(tmp_path / "l.sqlite")]) == 0
        assert _servers(d) == [pid]  # reused, not a second server on the same AOF
        r = connect_redis(load_settings())
        assert r.embedded.pid == pid and LiveState(r).kill_switch().by == "job"
        close_redis(r)
        # a live holder: a stop from the command line is refused, the server stays
        holder = connect_redis(load_settings())
        assert main(["redis", "stop"]) == 1 and _servers(d) == [pid]
        close_redis(holder)
        assert main(["redis", "stop"]) == 0 and _servers(d) == []
        assert main(["redis", "status"]) == 1
        t0 = time.perf_counter()
        assert main(["redis", "start"]) == 0 and len(_servers(d)) == 1
        assert time.perf_counter() - t0 < 5
    finally:
        start_embedded(d).shutdown()
