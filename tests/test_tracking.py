"""Issue 14: a real MLflow tracking server started on 127.0.0.1 receives a retrain run's parameters, metrics (by gate,
horizon and model), artefacts and code version through `trading-lib run`'s tracking step, and the registry's
champion / challenger as MLflow registered-model aliases."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from trading_lib.config import load_settings
from trading_lib.data.sources import load_market
from trading_lib.jobs import track_run
from trading_lib.models.base import LightGBMForecaster
from trading_lib.models.registry import ModelRegistry
from trading_lib.research.pipeline import build_dataset
from trading_lib.research.retrain import run_retrain_stage

SYMS = "AAPL,MSFT,JPM,XOM,KO,PFE"


@pytest.fixture
def mlflow_server(tmp_path):
    "A real MLflow tracking server (SQLite backend, artefacts proxied to a local folder) on a free loopback port."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("mlflow")
    log = open(tmp_path / "mlflow.log", "w")
    p = subprocess.Popen([str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                          "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                          "--artifacts-destination", str(tmp_path / "server-artifacts")],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                         env=os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no background job runner
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(360):
            try:
                if urllib.request.urlopen(url + "/health", timeout=2).read() == b"OK": break
            except OSError: pass
            assert p.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
            time.sleep(0.5)
        else: pytest.fail("MLflow server did not answer /health in 180 s: " + (tmp_path / "mlflow.log").read_text()[-3000:])
        yield url
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try: p.wait(30)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait(10)
        log.close()


def test_server_receives_retrain_run_and_aliases(mlflow_server, project_copy, monkeypatch):
    from mlflow import MlflowClient
    monkeypatch.chdir(project_copy); monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    s = load_settings(universe__symbols=SYMS, data__start="2003-01-01", data__end="2009-12-31", models__lgbm_n_estimators=40,
                      models__names="lightgbm")
    m = load_market(s); f, l = build_dataset(m, s)
    reg = ModelRegistry(project_copy / "runs" / "registry")
    cols = [c for c in f.columns if c not in ("vix", "vix_chg_20")]
    t = f.index.get_level_values("timestamp") <= pd.Timestamp("2006-12-31", tz="UTC")
    reg.register(LightGBMForecaster(horizons=s.models.horizons, n_estimators=40).fit(f[t][cols], l[t]), "lightgbm",
                 training_window=(f.index[0][0], pd.Timestamp("2006-12-29", tz="UTC")))
    run_dir = project_copy / "runs" / "retrain" / "20261130T000000Z-abc123"
    (dec,) = run_retrain_stage(m, s, run_dir, ["lightgbm"], reg.root, None, project_copy / "trials.jsonl", dict(models=["lightgbm"]))
    (run_dir / "retrain.ipynb").write_text("{}")  # stands in for the executed notebook papermill leaves
    assert track_run("retrain", run_dir) == 0
    c = MlflowClient(mlflow_server)
    exp = c.get_experiment_by_name("trading-lib/retrain")
    (r,) = c.search_runs([exp.experiment_id])
    assert r.data.tags["job"] == "retrain" and r.data.tags["run_id"] == run_dir.name and r.data.tags["code_version"]
    assert r.data.tags["data_hash"] == m.data_hash
    assert r.data.params == {"models": '["lightgbm"]'}
    g = dec["gates"]
    assert r.data.metrics["retrain/lightgbm/paired_ic"] == pytest.approx(g["paired_ic"]["value"])
    assert r.data.metrics["retrain/lightgbm/dsr"] == pytest.approx(g["dsr"]["value"])
    assert r.data.metrics["retrain/lightgbm/promoted"] == float(dec["promoted"])
    assert {"metrics.json", "summary.txt", "forecasts.parquet", "daily_ic.parquet", "retrain.ipynb"} <= {a.path for a in c.list_artifacts(r.info.run_id)}
    champ, chal = c.get_model_version_by_alias("lightgbm", "champion"), c.get_model_version_by_alias("lightgbm", "challenger")
    assert champ.tags["registry_version"] == dec["champion_after"] and chal.tags["registry_version"] == dec["challenger"] == "v0002"
    assert {a.path for a in c.list_artifacts(chal.run_id, "model")} == {"model/meta.json", "model/model.pt"}
