"""The architecture as a tested property: no import cycle among trading_lib's modules (lazy, function-level imports
included), dependencies flowing one way between the domain packages, no private name imported from another module,
every module in the README's module map, and saved models loadable whatever was imported before."""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "trading_lib"
# lower layers may not import higher ones (research and live never import each other)
LAYER = {"config": 0, "util": 0, "schedule": 10, "data": 1, "features": 2, "analytics": 3, "models": 4, "portfolio": 5, "trading": 6,
         "execution": 5.5, "rl": 7, "research": 8, "live": 8, "oversight": 9, "jobs": 10, "cli": 10}


def modules():
    for p in sorted(PKG.rglob("*.py")):
        if p.name in ("__init__.py", "_modidx.py"): continue
        yield ".".join(p.relative_to(ROOT).with_suffix("").parts), p


def imports(name, path):
    "(imported trading_lib module, imported names) for every import in the module, function-level ones included."
    pkg = name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else: mod = node.module or ""
            if not mod.startswith("trading_lib"): continue
            names = [a.name for a in node.names]
            if mod == "trading_lib" or not (ROOT / (mod.replace(".", "/") + ".py")).exists():
                # `from trading_lib.pkg import module`
                for n in names:
                    if (ROOT / (mod.replace(".", "/") + f"/{n}.py")).exists(): out.append((f"{mod}.{n}", []))
                continue
            out.append((mod, names))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("trading_lib.")]
    return out


GRAPH = {name: imports(name, path) for name, path in modules()}


def test_no_import_cycle():
    graph = {m: {d for d, _ in deps if d in GRAPH and d != m} for m, deps in GRAPH.items()}
    state, stack = {}, []
    def visit(m):
        state[m] = 1; stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1: pytest.fail("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state: visit(d)
        state[m] = 2; stack.pop()
    for m in sorted(graph):
        if m not in state: visit(m)


def layer(mod):
    return LAYER[mod.split(".")[1]]


def test_dependencies_flow_one_way():
    bad = [f"{m} imports {d}" for m, deps in GRAPH.items() for d, _ in deps
           if d in GRAPH and layer(d) > layer(m) or (d in GRAPH and {m.split(".")[1], d.split(".")[1]} == {"research", "live"})]
    assert not bad, "\n".join(bad)


def test_no_private_name_imported_from_another_module():
    bad = [f"{m} imports {n} from {d}" for m, deps in GRAPH.items() for d, names in deps for n in names
           if n.startswith("_") and d != m]
    assert not bad, "\n".join(bad)


def test_readme_module_map_covers_every_module():
    readme = (ROOT / "README.md").read_text()
    missing = [m for m in GRAPH if f"`{m.removeprefix('trading_lib.')}`" not in readme]
    assert not missing, f"modules missing from the README's module map: {missing}"


ZOO = ["lightgbm", "lstm", "gru", "cnn_lstm", "transformer", "tft", "gat", "xgboost", "ensemble"]


def test_every_saved_model_loads_in_a_fresh_process_that_imports_only_the_registry(tmp_path):
    """Forecaster.load must not depend on import order: each model is saved in one process and loaded in another that
    imports nothing but trading_lib.models.registry (the file names the class's module)."""
    fit = textwrap.dedent(f"""
        import numpy as np, pandas as pd
        from trading_lib.config import load_settings
        from trading_lib.models.factory import make_forecaster
        ms = load_settings(environ={{}}).models.model_copy(update=dict(lstm_lookback=5, zoo_epochs=1, lstm_epochs=1, horizons=[1],
                                                                         lgbm_n_estimators=5, xgb_n_estimators=5))
        ix = pd.MultiIndex.from_product([pd.date_range("2020-01-01", periods=60, tz="UTC", name="timestamp"), list("ABCDEF")],
                                        names=["timestamp", "symbol"])
        rng = np.random.default_rng(0)
        X = pd.DataFrame(rng.normal(size=(len(ix), 3)), index=ix, columns=["f1", "f2", "f3"])
        y = pd.DataFrame({{"fwd_ret_1": rng.normal(scale=0.01, size=len(ix))}}, index=ix)
        for n in {ZOO!r}:
            f = make_forecaster(n, ms, progress=False) if n in ("lstm", "gru", "cnn_lstm", "transformer", "tft") else make_forecaster(n, ms)
            f.fit(X, y); f.save({str(tmp_path)!r} + f"/{{n}}.pt")
            f.predict(X).to_parquet({str(tmp_path)!r} + f"/{{n}}.parquet")
    """)
    r = subprocess.run([sys.executable, "-c", fit], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    load = textwrap.dedent(f"""
        import sys, numpy as np, pandas as pd
        import trading_lib.models.registry
        assert "trading_lib.models.zoo" not in sys.modules and "trading_lib.models.factory" not in sys.modules
        from trading_lib.models.base import Forecaster
        ix = pd.MultiIndex.from_product([pd.date_range("2020-01-01", periods=60, tz="UTC", name="timestamp"), list("ABCDEF")],
                                        names=["timestamp", "symbol"])
        X = pd.DataFrame(np.random.default_rng(0).normal(size=(len(ix), 3)), index=ix, columns=["f1", "f2", "f3"])
        for n in {ZOO!r}:
            f = Forecaster.load({str(tmp_path)!r} + f"/{{n}}.pt", **({{"progress": False}} if n in ("lstm", "gru", "cnn_lstm", "transformer", "tft") else {{}}))
            a = f.predict(X); b = pd.read_parquet({str(tmp_path)!r} + f"/{{n}}.parquet")
            np.testing.assert_allclose(a["prediction"].to_numpy(), b["prediction"].to_numpy(), rtol=1e-5, atol=1e-7)
            print(n, type(f).__name__)
    """)
    r = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(r.stdout.split("\n")) > len(ZOO)


def test_the_cli_starts_without_torch_or_lightgbm():
    """`trading-lib audit verify`, `kill`, `approvals` … answer in about 2 s: importing the command table must not pull
    in torch, LightGBM or scikit-learn (≈ 5 s more per call); the commands that need them import them when they run."""
    import subprocess
    import sys
    code = "import sys, trading_lib.cli; print(sorted(m for m in ('torch', 'lightgbm', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"importing trading_lib.cli imports {out}"
