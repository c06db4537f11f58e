"""A real Prometheus server (Debian's `prometheus`, `make prometheus`) scrapes the live job's metrics endpoint while a
short replay runs through the real live loop, then evaluates the shipped alert rules (ops/prometheus/alerts.yml): an
injected HALTED state and an engaged kill switch fire their alerts. Everything listens on 127.0.0.1 only."""
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from trading_lib.config import load_settings
from trading_lib.data.sources import EmbeddedSource, MarketData, to_panel
from trading_lib.execution.brokers import SimulatedBroker
from trading_lib.execution.simulated import CostModel
from trading_lib.live.approvals import ApprovalQueue
from trading_lib.live.audit import Ledger
from trading_lib.live.metrics import LiveMetrics, MeteredLedger
from trading_lib.live.state import LiveState, close_redis, connect_redis
from trading_lib.live.trader import LiveTrader

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
SYMS = ["AAPL", "JPM", "KO", "XOM", "PFE", "MSFT"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r: return json.loads(r.read())


def wait_for(what: str, fn, timeout: float = 30.0, every: float = 0.25):
    "Poll `fn` until it returns a truthy value (returned); AssertionError naming `what` after `timeout` seconds."
    t0 = time.monotonic(); last = None
    while time.monotonic() - t0 < timeout:
        try:
            last = fn()
            if last: return last
        except OSError as e: last = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture
def prometheus(tmp_path):
    "Start a Prometheus server on 127.0.0.1; yields start(target) -> base URL. Terminated after the test."
    exe = shutil.which("prometheus")
    assert exe, "Prometheus is not installed: run `make prometheus` (Debian's prometheus package)"
    procs = []

    def start(target: str) -> str:
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{RULES}"]
scrape_configs:
  - job_name: trading_live
    static_configs: [{{targets: ["{target}"]}}]
""")
        log = open(tmp_path / "prometheus.log", "w")
        p = subprocess.Popen([exe, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                              f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        base = f"http://127.0.0.1:{port}"
        wait_for("Prometheus ready", lambda: urllib.request.urlopen(base + "/-/ready", timeout=2).status == 200, 30)
        return base
    yield start
    for p in procs:
        p.terminate()
        try: p.wait(10)
        except subprocess.TimeoutExpired: p.kill(); p.wait(5)


def query(base: str, expr: str) -> list:
    d = get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert d["status"] == "success", d
    return d["data"]["result"]


def scalar(base: str, expr: str):
    r = query(base, expr)
    return float(r[0]["value"][1]) if r else None


def firing(base: str) -> dict:
    return {a["labels"]["alertname"]: a for a in get(base + "/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"}


def test_prometheus_scrapes_a_replay_and_fires_halted_and_kill_switch(tmp_path, prometheus):
    s = load_settings(environ={}).replace(
        approvals__max_notional=1e12, approvals__max_weight_change=1.0, approvals__min_confidence=0.0,
        redis__embedded_dir=str(tmp_path / "redis"), redis__appendfsync="everysec", portfolio__top_k=3, portfolio__rebalance="W")
    bars = EmbeddedSource().bars(SYMS, "2019-01-01", "2019-06-30")
    close = to_panel(bars)
    fc = close.pct_change(20).stack().rename("prediction").reset_index().rename(columns={"level_1": "symbol"}).dropna()
    fc = fc.assign(horizon=20, confidence=0.5, model="momentum")  # look-ahead-free stand-in for model forecasts
    md = MarketData(bars, None, None, {}, "test", None)

    run_id = "prom-replay"
    m = LiveMetrics.from_settings(s, run_id, mode="replay", broker="simulated")
    port = m.serve(0)
    r = connect_redis(s, appendfsync=s.redis.appendfsync)
    try:
        led = MeteredLedger(Ledger(tmp_path / "ledger.sqlite"), m)
        st = LiveState(r, ledger=led)
        st.release_kill_switch("test-supervisor", "test start")
        q = ApprovalQueue(r, led, s.approvals.expiry_seconds)
        b = SimulatedBroker.open(tmp_path / "broker.json", CostModel.from_settings(s.costs), s.execution.initial_cash)
        m.watch(st, q, run_id=run_id, job="live")
        base = prometheus(f"127.0.0.1:{port}")
        wait_for("the first scrape", lambda: scalar(base, 'up{job="trading_live"}') == 1.0)

        tr = LiveTrader(s, run_id, md, fc, b, st, q, led, job="live")
        tr.start()
        t0 = time.monotonic()
        for t in range(60):  # Prometheus (1 s scrape interval) scrapes it as it goes
            with m.time_decision(): tr.step(t)
            m.set_equity(tr.equity, tr.sm.peak_equity, tr.sm.day_start_equity); m.set_session(tr.sessions[t])
            time.sleep(0.03)  # at least ~2 s of replay, whatever the machine: scrapes land mid-replay
        print(f"replay of 60 sessions: {time.monotonic() - t0:.1f} s, {len(b.fills)} fills")
        assert len(b.fills) > 5

        # what Prometheus stored equals what the loop did
        wait_for("the final fills count", lambda: scalar(base, "trading_fills_total") == len(b.fills))
        wait_for("the final equity", lambda: scalar(base, "trading_equity") == pytest.approx(tr.equity, rel=1e-12))
        assert scalar(base, 'trading_orders_total{state="filled"}') == len([o for o in tr.done.values() if o.state.value == "filled"])
        assert scalar(base, "trading_session_timestamp_seconds") == tr.sessions[59].timestamp()
        assert scalar(base, "changes(trading_session_timestamp_seconds[1m])") >= 1  # scraped mid-replay, not only at the end
        assert scalar(base, "trading_decision_latency_seconds_count") == 60
        assert scalar(base, "trading_ledger_append_latency_seconds_count") == len(list(led.records()))
        assert scalar(base, "trading_reconciliation_ok") == 1.0
        assert scalar(base, 'trading_state{trading_state="ACTIVE"}') == 1.0
        assert scalar(base, 'trading_run_info{run_id="prom-replay",mode="replay",broker="simulated"}') == 1.0
        assert scalar(base, "trading_heartbeat_age_seconds") < 30
        print("p95 ledger append (s):", scalar(base, "histogram_quantile(0.95, trading_ledger_append_latency_seconds_bucket)"))
        assert firing(base) == {}, f"nothing should fire during a normal replay: {sorted(firing(base))}"

        # every query of the shipped Grafana dashboard parses and, but for refusals (none in this replay), has data
        dash = json.loads((ROOT / "ops" / "grafana" / "trading_lib.json").read_text())
        exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
        empty = [e for e in exprs if not query(base, e)]
        assert empty == ["sum by (reason) (increase(trading_refusals_total[1h]))"] * (not tr.refusals), empty

        # an injected halt (a supervisor, from another process: Redis) fires TradingHalted within a few evaluations
        t_halt = time.monotonic()
        st.set_trading_state("HALTED", "test-supervisor", "injected halt")
        a = wait_for("TradingHalted firing", lambda: firing(base).get("TradingHalted"), timeout=20)
        print(f"TradingHalted firing {time.monotonic() - t_halt:.1f} s after the halt")
        assert a["labels"]["severity"] == "critical" and a["labels"]["instance"] == f"127.0.0.1:{port}"
        assert scalar(base, "trading_can_trade") == 0.0

        st.engage_kill_switch("test-supervisor", "injected kill switch")
        wait_for("KillSwitchEngaged firing", lambda: firing(base).get("KillSwitchEngaged"), timeout=20)
        m.set_running(False)
    finally:
        m.stop()
        close_redis(r, shutdown=True)
