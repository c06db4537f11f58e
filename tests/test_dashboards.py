"""The Voila dashboards in a real browser: `python -m trading_lib.oversight.server` on a free port (token-protected,
identity from the proxy header), driven by Playwright in Debian's headless Chromium (/usr/bin/chromium; `make test`
installs it). The real live loop (`trading_lib.live.trader.LiveTrader`) replays embedded data on the simulated broker in a
thread and waits on the supervisor's approvals. Every request the browser makes is intercepted: one to any host but
127.0.0.1 is refused and fails the tests. Screenshots go to tests/out/ (git-ignored)."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
OUT = ROOT / "tests" / "out"
TOKEN = "test-token-0123456789abcdef"
SECRET = "PKSECRETVALUE0123456789"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
# seconds from navigation to the banner showing the live state. The target (5 s on this machine) is a figure the test
# prints with the machine's load; the assertion only catches a page that never paints (speed targets are not timed
# tests: a loaded CI host must not turn them red). TL_FIRST_PAINT_LIMIT_S tightens it (e.g. 5) on a quiet host.
FIRST_PAINT_TARGET = 5.0
FIRST_PAINT_LIMIT = float(os.environ.get("TL_FIRST_PAINT_LIMIT_S", "30.0"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _wait(cond, timeout=20.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v: return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _make_runs(root: Path):
    "A backtest, a live and a failed run in the formats of runs/<job>/<id>/ over real embedded closes (2019)."
    from trading_lib.data.sources import EmbeddedSource, to_panel
    syms = ["KO", "PEP", "JNJ", "PG", "WMT"]
    close = to_panel(EmbeddedSource().bars(syms, "2019-01-01", "2019-12-31"))
    d = root / "runs" / "backtest" / "20250101T000000Z-test01"; d.mkdir(parents=True)
    rows = []
    for m, k in (("lightgbm", 5), ("lstm", 20)):
        mom = close.pct_change(k)
        f = mom.stack().rename("prediction").reset_index().rename(columns={"level_1": "symbol"}).dropna()
        rows.append(f.assign(horizon=5, confidence=0.5, model=m))
    pd.concat(rows, ignore_index=True)[["timestamp", "symbol", "horizon", "prediction", "confidence", "model"]].to_parquet(d / "forecasts.parquet")
    eq = pd.DataFrame({"strategy": 1e6 * (1 + close.pct_change().mean(axis=1).fillna(0)).cumprod()})
    eq["model:lightgbm"] = eq["model:lstm"] = eq["strategy"]
    eq["1/N"] = 1e6 * (close["KO"] / close["KO"].iloc[0]); eq["S&P 500"] = 1e6 * (close["PEP"] / close["PEP"].iloc[0])
    eq.to_parquet(d / "equity.parquet")
    fq = [dict(model=m, horizon=h, ic=ic, rank_ic=ic / 2, directional_accuracy=0.5 + ic) for m, ic in (("lightgbm", 0.01), ("lstm", 0.04)) for h in (5, 20)]
    perf = {"strategy": dict(sharpe=0.9, cagr=0.1, max_drawdown=-0.2), "1/N": dict(sharpe=0.7),
            "model:lightgbm": dict(sharpe=0.3), "model:lstm": dict(sharpe=0.6)}
    (d / "metrics.json").write_text(json.dumps(dict(forecast_quality=fq, performance=perf, run=dict(parameters=dict(top_k=2), code_version="t"))))
    lv = root / "runs" / "live" / "20250102T000000Z-live01"; lv.mkdir(parents=True)
    leq = pd.DataFrame({"equity": 1e6 * (1 + close["KO"].pct_change().fillna(0)).cumprod(), "cash": 0.0})
    leq.to_parquet(lv / "equity.parquet")
    (lv / "metrics.json").write_text(json.dumps(dict(run=dict(run_id=lv.name, parameters=dict(mode="replay")),
                                                     performance=dict(sharpe=0.4567, cagr=0.0321, max_drawdown=-0.0876))))
    fl = root / "runs" / "train" / "20250103T000000Z-fail01"; fl.mkdir(parents=True)
    (fl / "error.json").write_text(json.dumps(dict(ename="DataValidationError", evalue="AAPL 2019-03-04 close: 0.0 is not > 0")))
    return d, lv, fl


class ReplayJob(threading.Thread):
    """The live job under test: a replay of embedded data through `LiveTrader` on the simulated broker. A first phase
    (no approvals needed) builds positions; then, with every order needing approval, the next rebalance waits on the
    supervisor. `sent` / `dropped` / `refused` are read from the broker and the trader's orders."""
    def __init__(self, root, st, q, led):
        super().__init__(daemon=True)
        from test_live import market_and_forecasts, settings_for

        from trading_lib.execution.brokers import SimulatedBroker
        from trading_lib.execution.simulated import CostModel
        from trading_lib.live.trader import LiveTrader
        md, fc, _ = market_and_forecasts()
        s0 = settings_for(root, redis__embedded_dir=str(root / "runs" / "live" / "redis"), execution__min_order_notional=0.0)
        self.broker = SimulatedBroker.open(root / "broker.json", CostModel.from_settings(s0.costs), s0.execution.initial_cash)
        LiveTrader(s0, "dash-run", md, fc, self.broker, st, q, led, circuit_breakers=False).run(end="2019-03-29")
        s1 = s0.replace(approvals__max_notional=1.0)  # from now on every order waits for a supervisor
        self.trader = LiveTrader(s1, "dash-run", md, fc, self.broker, st, q, led, circuit_breakers=False,
                                 approval_wait_seconds=600, poll_seconds=0.1)
        self.stop = threading.Event(); self.error = None

    def run(self):
        try: self.trader.run(end="2019-04-10")
        except Exception as e: self.error = e

    def _orders(self):
        return {**self.trader.done, **self.trader.orders}

    @property
    def sent(self): return [cid for cid in self.broker.orders if cid in self._orders()]

    @property
    def dropped(self): return [c for c, o in self._orders().items() if o.state.value == "rejected" and (o.reason or "").startswith("supervisor:")]

    @property
    def refused(self): return [c for c, o in self._orders().items() if o.state.value == "rejected" and (o.reason or "").startswith("risk:")]


def _old_run(st, q):
    "A finished run: its job record ended, one request left pending (nobody can act on it) and one decided."
    from trading_lib.execution.orders import Order
    st.set_job("old-run", "replay", "simulated", "live")
    for i, d in enumerate(("2019-01-02", "2019-01-03", "2019-01-04")): st.set_job_session(d, 1e6 + 1000 * i)
    olds = [Order.create("old-run", "2019-01-03T00:00:00+00:00", s, "buy", 10820.0) for s in ("XOM", "CVX")]
    for o in olds: q.submit(o, ["notional 1,000,000.00 > max_notional 250,000.00"], {"notional": 1e6})
    q.approve(olds[1].client_order_id, "bob")
    st.end_job({"sessions": 3, "reconciliation_ok": True})
    return olds


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from trading_lib.live.approvals import ApprovalQueue
    from trading_lib.live.audit import Ledger
    from trading_lib.live.state import LiveState, start_embedded
    root = tmp_path_factory.mktemp("dash")
    shutil.copy(ROOT / "settings.ini", root / "settings.ini"); shutil.copytree(ROOT / "dashboards", root / "dashboards")
    runs = _make_runs(root)
    srv = start_embedded(root / "runs" / "live" / "redis"); r = srv.client()
    led = Ledger(root / "runs" / "live" / "ledger.sqlite")
    st, q = LiveState(r, ledger=led), ApprovalQueue(r, led, 3600)
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it (make browser)"
    st.set_trading_state("ACTIVE", "live-job", "start"); st.release_kill_switch("live-job", "start")
    olds = _old_run(st, q)
    job = ReplayJob(root, st, q, led); job.start()
    _wait(lambda: len([p for p in q.list() if p.order.run_id == "dash-run"]) >= 3 or job.error, 120, "the replay to wait on approvals")
    assert job.error is None, job.error
    pending = [p for p in q.list() if p.order.run_id == "dash-run"]
    orders = [p.order for p in pending][:3]
    held = [s for s, x in st.positions().items() if x]
    port = _free_port()
    senv = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
    senv.update(ALPACA_API_KEY=SECRET, ALPACA_SECRET_KEY=SECRET + "x", ALPACA_API_SECRET=SECRET + "y", ALPACA_OAUTH_TOKEN=SECRET + "z",
                TRADING_DASHBOARD_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "trading_lib.oversight.server", "--root", str(root), "--port", str(port)],
                            cwd=root, env=senv, stdout=log, stderr=subprocess.STDOUT)
    def up():
        try: socket.create_connection(("127.0.0.1", port), 0.2).close(); return True
        except OSError: return proc.poll() is not None
    _wait(up, 90, "the dashboard server")
    assert proc.poll() is None, (root / "server.log").read_text()
    # the pre-started page kernels (preheat): both pages executed before the first request
    # the pre-started page kernels (Voila preheat): the oversight page's kernel has executed its page and waits for a
    # request once it connects to /voila/query; the research page's pool is filled too
    t = time.monotonic()
    _wait(lambda: "GET /voila/query/" in (root / "server.log").read_text() and
          (root / "server.log").read_text().count("Kernel pool of") >= 2, 180, "the pre-started page kernels")
    print(f"\npage kernels pre-started and executed {time.monotonic() - t:.1f} s after the server", flush=True)
    from playwright.sync_api import sync_playwright
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    ctx = browser.new_context(viewport={"width": 1280, "height": 2400}, extra_http_headers={"X-Forwarded-User": "alice"})
    outside = []
    def guard(route):
        host = urllib.parse.urlsplit(route.request.url).hostname
        if host != "127.0.0.1" and not route.request.url.startswith(("data:", "blob:")):
            outside.append(route.request.url); return route.abort()
        return route.continue_()
    ctx.route("**/*", guard)
    OUT.mkdir(parents=True, exist_ok=True)
    yield dict(root=root, url=f"http://127.0.0.1:{port}", port=port, state=st, queue=q, ledger=led, orders=orders, job=job, ctx=ctx,
               runs=runs, held=held, olds=olds, proc=proc, outside=outside)
    job.stop.set(); browser.close(); pw.stop()
    if proc.poll() is None:
        proc.terminate()
        try: proc.wait(15)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait(5)
    log.close(); r.close(); srv.shutdown()


def _cls(cid):
    from trading_lib.oversight.dashboard import _css_id
    return "." + _css_id(cid)


FORGE_JS = """([selector]) => {
  // a viewer's forged click: make the disabled button clickable in the DOM; its widget view then sends the same
  // {event: 'click'} comm message to the kernel that a hand-written websocket message would
  const el = document.querySelector(selector);
  const wasDisabled = el.disabled;
  el.disabled = false; el.removeAttribute('disabled'); el.click();
  return wasDisabled;
}"""


def test_oversight_page(env):
    st, q, led, job = env["state"], env["queue"], env["ledger"], env["job"]
    a, b, c = (o.client_order_id for o in env["orders"])
    page = env["ctx"].new_page()
    marks = {}
    def on_ws(ws):
        marks.setdefault("websocket open", time.monotonic())
        ws.on("framereceived", lambda f: marks.setdefault("widget states received", time.monotonic())
              if (b"update_states" if isinstance(f, bytes) else "update_states") in f else None)
    page.on("websocket", on_ws)
    t0 = time.monotonic()
    page.goto(env["url"] + f"/voila/render/oversight.ipynb?token={TOKEN}", wait_until="commit")
    page.locator(".tl-banner-headline").first.wait_for(state="visible", timeout=60_000)
    first_paint = time.monotonic() - t0
    nav = page.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0]; return [n.responseStart, n.responseEnd, n.domContentLoadedEventEnd]; })()")
    print(f"\nfirst paint of the oversight state (navigation → banner visible): {first_paint:.2f} s "
          f"(target {FIRST_PAINT_TARGET:g} s: {'met' if first_paint < FIRST_PAINT_TARGET else 'NOT met'}; hang limit {FIRST_PAINT_LIMIT:g} s), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          f"(page: first byte {nav[0] / 1e3:.2f} s, last byte {nav[1] / 1e3:.2f} s, scripts loaded {nav[2] / 1e3:.2f} s; "
          + ", ".join(f"{k} {v - t0:.2f} s" for k, v in marks.items()) + ")", flush=True)
    banner = page.locator(".tl-banner")
    assert "NEW ORDERS ALLOWED" in banner.inner_text()
    assert first_paint < FIRST_PAINT_LIMIT, f"first paint {first_paint:.2f} s ≥ {FIRST_PAINT_LIMIT} s"
    page.locator(".tl-approval-row").first.wait_for(state="visible", timeout=30_000)
    _wait(lambda: page.locator(".tl-identity").inner_text() == "alice", 10, "the identity from the proxy header")

    # the running job: run id, mode, broker, the replayed session date
    jt = page.locator(".tl-job-box").inner_text()
    assert "dash-run" in jt and "replay" in jt and "simulated" in jt and "RUNNING" in jt, jt
    assert st.job()["session"][:10] in jt
    # the running run's pending requests only, newest first, their count in the banner
    pend = sorted([p for p in q.list() if p.order.run_id == "dash-run"], key=lambda p: (p.created, p.client_order_id), reverse=True)
    _wait(lambda: page.locator(".tl-approval-row").count() == len(pend), 10, "one row per pending request of the running job")
    assert pend[0].client_order_id in page.locator(".tl-approval-row").first.inner_text()
    assert f"{len(pend)} approval requests of the running job" in banner.inner_text()
    # the finished run's requests: no buttons anywhere; they are in the (collapsed) history
    for o in env["olds"]:
        assert page.locator(_cls(o.client_order_id)).count() == 0
    page.locator(".tl-history-acc .jupyter-widget-Collapse-header, .tl-history-acc .lm-Collapse-header, .tl-history-acc .p-Collapse-header").first.click()
    hist = page.locator(".tl-history")
    hist.locator(f"tr[data-cid='{env['olds'][0].client_order_id}']").wait_for(timeout=10_000)
    assert "no decision possible" in hist.inner_text() and "approved by bob" in hist.inner_text()
    assert page.locator(".tl-history button").count() == 0
    # numbers formatted, charts interactive, nothing secret
    body = page.locator("body").inner_text()
    assert not re.search(r"\d\.\d+e[+-]?\d", body), re.search(r".{30}\d\.\d+e[+-]?\d.{10}", body)
    assert "10,820" in hist.inner_text()
    page.locator(".tl-run-chart .js-plotly-plot .scatterlayer .trace").first.wait_for(timeout=30_000)  # the equity line is drawn
    html = page.content()
    assert SECRET not in html and TOKEN not in html and "oversight_app()" not in html  # no secrets, sources stripped
    assert env["held"] and all(sym in page.locator(".tl-positions").inner_text() for sym in env["held"])
    page.screenshot(path=str(OUT / "oversight.png"), full_page=True)

    # approve one: the job proceeds, the ledger has the approval with the supervisor's identity, the row leaves
    page.locator(f"{_cls(a)} .tl-approve").click()
    _wait(lambda: q.get(a).status == "approved", 15, "the approval")
    assert q.get(a).decided_by == "alice"
    page.locator(_cls(a)).wait_for(state="detached", timeout=10_000)
    _wait(lambda: a in job.sent, 10, "the job to send the approved order")
    assert any(r.payload.get("client_order_id") == a and r.payload.get("status") == "approved" and r.payload.get("by") == "alice"
               for r in led.records(kind="approval"))
    # reject another, with a reason
    page.locator(f"{_cls(b)} .tl-reject-reason input").fill("too large for today")
    page.locator(f"{_cls(b)} .tl-reject").click()
    _wait(lambda: q.get(b).status == "rejected", 15, "the rejection")
    assert q.get(b).decision_reason == "too large for today" and q.get(b).decided_by == "alice"
    _wait(lambda: b in job.dropped, 10, "the job to drop the rejected order")

    # the live feed updates without a reload
    st.emit("alert", {"alert": "feed-check-4711"})
    page.locator(".tl-feed", has_text="feed-check-4711").wait_for(timeout=15_000)

    # a forged Confirm of the kill switch that nobody armed is refused by the kernel
    n, ks = len(led), st.kill_switch()
    assert page.evaluate(FORGE_JS, [".tl-kill-confirm"]) is True  # it was disabled
    page.locator(".tl-refused", has_text="kill switch refused: the kill switch was not armed").wait_for(timeout=10_000)
    time.sleep(0.5)
    assert len(led) == n and st.kill_switch() == ks and st.can_trade()[0]

    # the kill switch engaged elsewhere (CLI, another page): the banner turns red with the reason within 2 s, no reload
    t0 = time.monotonic()
    st.engage_kill_switch("bob", "drill 4711")
    banner.filter(has_text="NEW ORDERS REFUSED").wait_for(timeout=2_000)
    dt = time.monotonic() - t0
    print(f"kill switch engaged → banner says refused: {dt:.2f} s", flush=True)
    assert "kill switch engaged by bob" in banner.inner_text() and "drill 4711" in banner.inner_text()
    assert page.locator(".tl-banner-stop").count() == 1 and page.locator(".tl-banner-ok").count() == 0
    page.screenshot(path=str(OUT / "oversight-halted.png"), full_page=True)
    # approved after the stop: the job must not send it
    page.locator(f"{_cls(c)} .tl-approve").click()
    _wait(lambda: c in job.refused, 10, "the job to refuse the order after the kill switch")
    assert c not in job.sent
    st.release_kill_switch("bob", "drill over")
    banner.filter(has_text="NEW ORDERS ALLOWED").wait_for(timeout=5_000)
    page.close()
    assert env["outside"] == [], f"requests left 127.0.0.1: {env['outside']}"


def test_research_page(env):
    bt, lv, fl = env["runs"]
    page = env["ctx"].new_page()
    t0 = time.monotonic()
    page.goto(env["url"] + f"/voila/render/research.ipynb?token={TOKEN}", wait_until="commit")
    page.locator(".tl-runs").wait_for(timeout=60_000)
    print(f"\nfirst paint of the research page: {time.monotonic() - t0:.2f} s", flush=True)
    page.locator(".tl-fc-stats").wait_for(timeout=60_000)
    runs = page.locator(".tl-runs").inner_text()
    assert bt.name in runs and lv.name in runs
    assert "0.457" in runs and "-8.76%" in runs  # a live run's own metrics, formatted
    failed = page.locator(".tl-failed").inner_text()
    assert fl.name in failed and "DataValidationError: AAPL 2019-03-04 close: 0.0 is not > 0" in failed
    lb = page.locator(".tl-leaderboard").inner_text()
    assert "lstm" in lb and "lightgbm" in lb and lb.index("lstm") < lb.index("lightgbm")  # best Sharpe first
    page.locator(".tl-lb-order button", has_text="worst first").click()
    _wait(lambda: (t := page.locator(".tl-leaderboard").inner_text()).index("lightgbm") < t.index("lstm"), 10, "the leaderboard to re-sort")
    page.locator(".tl-ic-stats").wait_for(timeout=30_000)
    assert "lstm" in page.locator(".tl-ic-stats").inner_text()
    for sel in (".tl-ic-chart", ".tl-eq-chart", ".tl-fc-chart"):  # the charts follow the page's state, with their lines drawn
        page.locator(f"{sel} .js-plotly-plot .scatterlayer .trace").first.wait_for(timeout=90_000)
    assert "dates" in page.locator(".tl-fc-stats").inner_text()
    legend = page.locator(".tl-eq-chart .legendtext").all_text_contents()  # the newest backtest, against its benchmarks
    assert legend == [bt.name, "1/N", "S&P 500"], legend
    assert SECRET not in page.content()
    page.screenshot(path=str(OUT / "research.png"), full_page=True)
    page.close()
    assert env["outside"] == [], f"requests left 127.0.0.1: {env['outside']}"


def test_token_required(env):
    for url in (env["url"] + "/voila/render/oversight.ipynb", env["url"] + "/voila/render/oversight.ipynb?token=wrong-token-00000000"):
        req = urllib.request.Request(url, headers={"X-Forwarded-User": "mallory"})
        opener = urllib.request.build_opener(type("NoRedirect", (urllib.request.HTTPRedirectHandler,), {"redirect_request": lambda *a, **k: None}))
        try: status = opener.open(req, timeout=10).status
        except urllib.error.HTTPError as e: status = e.code
        assert status in (302, 401, 403), (url, status)


def _kernel_processes(proc):
    import psutil
    return [c for c in psutil.Process(proc.pid).children(recursive=True) if "ipykernel" in " ".join(c.cmdline())]


def test_kernels_get_an_allow_listed_environment(env):
    ks = _kernel_processes(env["proc"])
    assert ks
    for k in ks:
        e = k.environ()
        leaked = [n for n, v in e.items() if SECRET in v or TOKEN in v or n.startswith("ALPACA_")]
        assert leaked == [], leaked
        assert "PATH" in e and "TRADING_DASHBOARD_TOKEN" not in e


def test_widget_state_request_cannot_hang_the_server(env):
    """issue 16 #15: a client on the legacy websocket protocol opens the widget control comm and asks for the widget
    states; the reply carries binary buffers (the figures' arrays), whose header Voila 0.5.13 read as a count of
    ~10^18 offsets. The server must keep answering, stay bounded in memory, and the reply must arrive."""
    import psutil
    import websocket
    port, proc = env["port"], env["proc"]
    import http.cookiejar  # the token logs in once (cookie), then the server redirects to the URL without it
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    html = opener.open(f"{env['url']}/voila/render/oversight.ipynb?token={TOKEN}", timeout=120).read().decode()
    kid = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", html).group(0)
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{kid}/channels?token={TOKEN}", timeout=10)
    sess = uuid.uuid4().hex
    def msg(mt, content):
        return json.dumps({"header": {"msg_id": uuid.uuid4().hex, "msg_type": mt, "username": "x", "session": sess, "date": "",
                                      "version": "5.3"}, "parent_header": {}, "metadata": {"version": "1.0.0"}, "content": content,
                           "channel": "shell", "buffers": []})
    comm = uuid.uuid4().hex
    rss0 = psutil.Process(proc.pid).memory_info().rss
    ws.send(msg("comm_open", {"comm_id": comm, "target_name": "jupyter.widget.control", "data": {}}))
    ws.send(msg("comm_msg", {"comm_id": comm, "data": {"method": "request_states"}}))
    got, end = None, time.monotonic() + 30
    ws.settimeout(2)
    while got is None and time.monotonic() < end:
        try: m = ws.recv()
        except websocket.WebSocketTimeoutException: continue
        if isinstance(m, bytes) and b"update_states" in m: got = m
        elif isinstance(m, str) and "update_states" in m: got = m
    assert got is not None, "no update_states reply"
    worst = 0.0
    for _ in range(10):
        t = time.monotonic()
        assert urllib.request.urlopen(f"{env['url']}/voila/static/voila.js?token={TOKEN}", timeout=5).status == 200
        worst = max(worst, time.monotonic() - t); time.sleep(0.3)
    grew = (psutil.Process(proc.pid).memory_info().rss - rss0) / 1e6
    print(f"\nafter request_states: update_states {len(got):,} bytes; worst HTTP answer {worst:.3f} s; server RSS {grew:+.1f} MB", flush=True)
    assert worst < 2.0 and grew < 100, (worst, grew)
    ws.close()


def test_sigterm_stops_within_5s_and_no_token_in_the_log(env):
    proc, root = env["proc"], env["root"]
    kernels = _kernel_processes(proc)
    t = time.monotonic(); proc.send_signal(signal.SIGTERM)
    try: proc.wait(10)
    except subprocess.TimeoutExpired: pass
    dt = time.monotonic() - t
    print(f"\nserver exit after SIGTERM: {dt:.2f} s", flush=True)
    assert proc.poll() is not None and dt < 5.0, dt
    _wait(lambda: not any(k.is_running() and k.status() != "zombie" for k in kernels), 5, "the page kernels to end")
    text = (root / "server.log").read_text()
    assert "token=[redacted]" in text and TOKEN not in text and SECRET not in text
