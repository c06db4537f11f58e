"""`make lab` starts JupyterLab (also as root: --allow-root is added only for uid 0) on 127.0.0.1, and the notebooks
open on the `trading-lib` kernel: their metadata names it, it is the server's default, and a session starts it."""
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "lab-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def api(base, path, method="GET", body=None):
    req = urllib.request.Request(f"{base}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def test_every_notebook_names_the_trading_lib_kernel():
    nbs = sorted(glob.glob(str(ROOT / "nbs" / "**" / "*.ipynb"), recursive=True)) + sorted(glob.glob(str(ROOT / "scheduled" / "*.ipynb")))
    assert len(nbs) > 20
    wrong = [p for p in nbs if json.loads(Path(p).read_text())["metadata"]["kernelspec"]["name"] != "trading-lib"]
    assert wrong == []


def test_make_lab_serves_notebooks_on_the_trading_lib_kernel(tmp_path):
    venv = Path(sys.prefix)
    assert (venv / "share" / "jupyter" / "kernels" / "trading-lib" / "kernel.json").exists(), "run make install (registers the kernel)"
    port = free_port()
    env = dict(os.environ, JUPYTER_TOKEN=TOKEN, JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"))
    # -o: treat the venv's install stamp as up to date (this test never reinstalls into the running venv)
    cmd = ["make", "-s", "lab", f"VENV={venv}", "-o", f"{venv}/.installed", f"LAB_PORT={port}"]
    log = open(tmp_path / "lab.log", "w")
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            try: api(base, "/api/status"); break
            except OSError:
                assert p.poll() is None, f"make lab exited {p.returncode}: {(tmp_path / 'lab.log').read_text()[-2000:]}"
                assert time.monotonic() - t0 < 90, "JupyterLab did not answer within 90 s"
                time.sleep(0.5)
        print(f"JupyterLab answered {time.monotonic() - t0:.1f} s after make lab (uid {os.getuid()})")
        ks = api(base, "/api/kernelspecs")
        assert ks["default"] == "trading-lib" and "trading-lib" in ks["kernelspecs"]
        nb = api(base, "/api/contents/nbs/live/26_metrics.ipynb")
        name = nb["content"]["metadata"]["kernelspec"]["name"]
        assert name == "trading-lib"
        s = api(base, "/api/sessions", "POST", {"path": "nbs/live/26_metrics.ipynb", "type": "notebook", "kernel": {"name": name}})
        assert s["kernel"]["name"] == "trading-lib"
        api(base, f"/api/sessions/{s['id']}", "DELETE")
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try: p.wait(20)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait(5)
