"""The Voila dashboards in a real browser: `python -m trading_lib.oversight.server` on a free port (token-protected,
identity from the proxy header), driven by Playwright in Debian's headless Chromium (/usr/bin/chromium; `make test`
installs it). The real live loop (`trading_lib.live.trader.LiveTrader`) replays embedded data on the simulated broker in a
thread and waits on the supervisor's approvals. Screenshots go to tests/out/ (git-ignored)."""
import json, os, re, shutil, socket, subprocess, sys, threading, time, urllib.error, urllib.request
from pathlib import Path
import numpy as np, pandas as pd
import pytest

from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
OUT = ROOT / "tests" / "out"
TOKEN = "test-token-0123456789abcdef"
SECRET = "PKSECRETVALUE0123456789"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


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
    "A backtest run in the format of runs/backtest/<id>/ over real embedded closes (KO, PEP, 2019)."
    from trading_lib.data.sources import EmbeddedSource, to_panel
    close = to_panel(EmbeddedSource().bars(["KO", "PEP"], "2019-01-01", "2019-12-31"))
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
    return d


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


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from trading_lib.live.state import start_embedded, LiveState
    from trading_lib.live.audit import Ledger
    from trading_lib.live.approvals import ApprovalQueue
    from trading_lib.trading.orders import Order
    root = tmp_path_factory.mktemp("dash")
    shutil.copy(ROOT / "settings.ini", root / "settings.ini"); shutil.copytree(ROOT / "dashboards", root / "dashboards")
    run = _make_runs(root)
    srv = start_embedded(root / "runs" / "live" / "redis"); r = srv.client()
    led = Ledger(root / "runs" / "live" / "ledger.sqlite")
    st, q = LiveState(r, ledger=led), ApprovalQueue(r, led, 3600)
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it (make browser)"
    st.set_trading_state("ACTIVE", "live-job", "start"); st.release_kill_switch("live-job", "start")
    job = ReplayJob(root, st, q, led); job.start()
    _wait(lambda: len(q.list()) >= 3 or job.error, 120, "the replay to wait on approvals")
    assert job.error is None, job.error
    orders = [p.order for p in q.list()][:3]
    held = [s for s, x in st.positions().items() if x]
    port = _free_port()
    senv = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
    senv.update(ALPACA_API_KEY=SECRET, ALPACA_SECRET_KEY=SECRET + "x", TRADING_DASHBOARD_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "trading_lib.oversight.server", "--root", str(root), "--port", str(port)],
                            cwd=root, env=senv, stdout=log, stderr=subprocess.STDOUT)
    def up():
        try: socket.create_connection(("127.0.0.1", port), 0.2).close(); return True
        except OSError: return proc.poll() is not None
    _wait(up, 30, "the dashboard server")
    assert proc.poll() is None, (root / "server.log").read_text()
    from playwright.sync_api import sync_playwright
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    ctx = browser.new_context(viewport={"width": 1280, "height": 1600}, extra_http_headers={"X-Forwarded-User": "alice"})
    OUT.mkdir(parents=True, exist_ok=True)
    yield dict(root=root, url=f"http://127.0.0.1:{port}", state=st, queue=q, ledger=led, orders=orders, job=job, ctx=ctx, run=run,
               held=held)
    job.stop.set(); browser.close(); pw.stop()
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
    page.goto(env["url"] + f"/voila/render/oversight.ipynb?token={TOKEN}", wait_until="domcontentloaded")
    page.locator(".tl-approval-row").first.wait_for(state="visible", timeout=60_000)
    assert page.locator(".tl-identity").inner_text() == "alice"
    assert page.locator(".tl-approval-row").count() >= 3 and "ACTIVE" in page.locator(".tl-header").inner_text()
    html = page.content()
    assert SECRET not in html and TOKEN not in html and "oversight_app()" not in html  # no secrets, sources stripped
    assert env["held"] and all(sym in page.locator(".tl-positions").inner_text() for sym in env["held"])

    # approve one: the job proceeds, the ledger has the approval with the supervisor's identity
    page.locator(f"{_cls(a)} .tl-approve").click()
    page.locator(f"{_cls(a)} .tl-status-approved").wait_for(timeout=15_000)
    assert q.get(a).decided_by == "alice"
    _wait(lambda: a in job.sent, 10, "the job to send the approved order")
    assert any(r.payload.get("client_order_id") == a and r.payload.get("status") == "approved" and r.payload.get("by") == "alice"
               for r in led.records(kind="approval"))
    # reject another, with a reason
    page.locator(f"{_cls(b)} .tl-reject-reason input").fill("too large for today")
    page.locator(f"{_cls(b)} .tl-reject").click()
    page.locator(f"{_cls(b)} .tl-status-rejected").wait_for(timeout=15_000)
    assert q.get(b).status == "rejected" and q.get(b).decision_reason == "too large for today" and q.get(b).decided_by == "alice"
    _wait(lambda: b in job.dropped, 10, "the job to drop the rejected order")
    _wait(lambda: job.trader._recorded.get(b) == "rejected", 10, "the job to record the rejection")

    # the live feed updates without a reload
    st.emit("alert", {"alert": "feed-check-4711"})
    page.locator(".tl-feed", has_text="feed-check-4711").wait_for(timeout=15_000)

    # forged widget messages: clicks on disabled buttons reach the kernel as comm messages — Approve of the already
    # approved order, Reject of the already rejected one, and Confirm of the kill switch that nobody armed
    n, ks = len(led), st.kill_switch()
    for sel, said in ((f"{_cls(a)} .tl-approve", f"approve {a} refused: order {a} is not pending: already approved by alice"),
                      (f"{_cls(b)} .tl-reject", f"reject {b} refused"), (".tl-kill-confirm", "kill switch refused: the kill switch was not armed")):
        assert page.evaluate(FORGE_JS, [sel]) is True  # it was disabled
        page.locator(".tl-refused", has_text=said).wait_for(timeout=10_000)
    time.sleep(0.5)
    assert len(led) == n and st.kill_switch() == ks and st.can_trade()[0]
    assert q.get(a).status == "approved" and q.get(a).decided_by == "alice" and job.sent.count(a) == 1
    page.screenshot(path=str(OUT / "oversight.png"), full_page=True)

    # engage the kill switch through its confirmation step: the job stops sending orders
    page.locator(".tl-kill-engage").click()
    page.locator(".tl-kill-reason input").fill("browser test stop")
    page.locator(".tl-kill-confirm").click()
    _wait(lambda: not st.can_trade()[0], 10, "the kill switch")
    assert st.kill_switch().engaged and st.kill_switch().by == "alice"
    page.locator(".tl-header", has_text="ENGAGED").wait_for(timeout=10_000)
    page.locator(f"{_cls(c)} .tl-approve").click()  # approved after the stop: the job must not send it
    _wait(lambda: c in job.refused, 10, "the job to refuse the order after the kill switch")
    assert c not in job.sent
    page.locator(".tl-feed", has_text="risk_refusal").wait_for(timeout=10_000)
    page.screenshot(path=str(OUT / "oversight-halted.png"), full_page=True)
    page.close()


def test_research_page(env):
    page = env["ctx"].new_page()
    page.goto(env["url"] + f"/voila/render/research.ipynb?token={TOKEN}", wait_until="domcontentloaded")
    page.locator(".tl-fc-stats").wait_for(timeout=60_000)
    assert env["run"].name in page.locator(".tl-runs").inner_text()
    lb = page.locator(".tl-leaderboard").inner_text()
    assert "lstm" in lb and "lightgbm" in lb and lb.index("lstm") < lb.index("lightgbm")  # best Sharpe first
    assert "dates" in page.locator(".tl-fc-stats").inner_text()
    assert page.locator(".tl-eq-chart img, img.tl-eq-chart").count() >= 1
    assert SECRET not in page.content()
    page.screenshot(path=str(OUT / "research.png"), full_page=True)
    page.close()


def test_token_required(env):
    for url in (env["url"] + "/voila/render/oversight.ipynb", env["url"] + "/voila/render/oversight.ipynb?token=wrong-token-00000000"):
        req = urllib.request.Request(url, headers={"X-Forwarded-User": "mallory"})
        opener = urllib.request.build_opener(type("NoRedirect", (urllib.request.HTTPRedirectHandler,), {"redirect_request": lambda *a, **k: None}))
        try: status = opener.open(req, timeout=10).status
        except urllib.error.HTTPError as e: status = e.code
        assert status in (302, 401, 403), (url, status)
