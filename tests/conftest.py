import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def project_copy(tmp_path):
    """A throw-away project root (settings.ini + scheduled/) so that job runs write under tmp_path/runs."""
    import shutil
    shutil.copy(ROOT / "settings.ini", tmp_path / "settings.ini")
    shutil.copytree(ROOT / "scheduled", tmp_path / "scheduled")
    yield tmp_path
    from trading_lib.live.state import stop_embedded
    stop_embedded(tmp_path / "runs" / "live" / "redis", force=True)  # a job's embedded Redis outlives it by design


@pytest.fixture
def server(tmp_path):
    "An embedded real Redis server (AOF under tmp_path/redis), shut down after the test."
    from trading_lib.live.state import start_embedded
    emb = start_embedded(tmp_path / "redis")
    yield emb
    emb.shutdown()
