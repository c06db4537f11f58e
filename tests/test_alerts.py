"""Alerts reach a person: a local webhook receiver (http.server on 127.0.0.1) gets each alert once through apprise's
json:// target taken from TRADING_ALERT_URLS; duplicates within the window are suppressed; the per-minute cap holds;
a HALTED state written to the real live state (embedded Redis) arrives as one critical message."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from trading_lib.config import load_settings
from trading_lib.execution.orders import Order
from trading_lib.live.alerts import ALERT_URLS_ENV, Alerter
from trading_lib.live.approvals import ApprovalQueue
from trading_lib.live.state import LiveState


@pytest.fixture
def receiver():
    "A webhook receiver on 127.0.0.1 (random port) that stores every JSON body it is POSTed."
    got = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0))
            got.append(json.loads(self.rfile.read(n)))
            self.send_response(200); self.end_headers(); self.wfile.write(b"ok")

        def log_message(self, *a): pass
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    th = threading.Thread(target=srv.serve_forever, daemon=True); th.start()
    yield f"json://127.0.0.1:{srv.server_port}/", got
    srv.shutdown(); srv.server_close(); th.join(5)


def test_an_alert_arrives_once_and_duplicates_are_suppressed(receiver):
    url, got = receiver
    s = load_settings(environ={})
    a = Alerter.from_env(s, environ={ALERT_URLS_ENV: url})
    assert a.targets == 1 and a.dedupe == s.alerts.dedupe_seconds
    t0 = time.monotonic()
    assert a.trading_state("HALTED", "drawdown -26.1% beyond limit 25.00%", "run-7") == "queued"
    for _ in range(5): assert a.trading_state("HALTED", "still halted", "run-7") == "duplicate"
    assert a.flush(20)
    print(f"delivered in {time.monotonic() - t0:.2f} s")
    assert len(got) == 1
    msg = got[0]
    assert msg["title"] == "[trading_lib] Trading HALTED (run run-7): no new orders are sent"
    assert msg["message"] == "drawdown -26.1% beyond limit 25.00%"
    assert msg["type"] == "failure"  # critical → apprise's failure type
    assert a.counts == dict(queued=1, duplicate=5, rate_limited=0, no_targets=0, sent=1, failed=0)


def test_rate_limit_caps_notifications_per_minute(receiver):
    url, got = receiver
    t = [0.0]
    a = Alerter([url], dedupe_seconds=900, max_per_minute=3, clock=lambda: t[0])
    outs = [a.approval_waiting(f"cid-{i}", "KO", "buy", 100, 20 * 60) for i in range(5)]
    assert outs == ["queued"] * 3 + ["rate_limited"] * 2
    t[0] = 61.0  # a minute later the cap has room again; the rate-limited keys were not marked as sent
    assert a.approval_waiting("cid-3", "KO", "buy", 100, 21 * 60) == "queued"
    assert a.flush(20)
    assert [m["title"] for m in got] == [f"[trading_lib] Approval waiting {m} min: buy 100 KO" for m in (20, 20, 20, 21)]


def test_live_state_halt_reaches_the_receiver_once(receiver, server):
    url, got = receiver
    st = LiveState(server.client())
    q = ApprovalQueue(server.client())
    st.release_kill_switch("test-supervisor", "start"); st.set_trading_state("ACTIVE", "test-supervisor", "start")
    q.submit(Order.create("run-9", pd.Timestamp("2020-03-02", tz="UTC"), "KO", "buy", 10.0), ["notional"])
    a = Alerter([url])
    assert a.check_live(st, q, "run-9") == []  # ACTIVE, released, a fresh request: quiet
    st.set_trading_state("HALTED", "test-supervisor", "injected halt")
    for _ in range(3): a.check_live(st, q, "run-9")  # the loop checks every session
    assert a.flush(20)
    assert [m["title"] for m in got] == ["[trading_lib] Trading HALTED (run run-9): no new orders are sent"]
