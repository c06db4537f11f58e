"""Settings, job parameters and command-line inputs (issue 16, items 11 and 11b): every bad input is refused at once
with a message that names the value and where it came from; nothing writes outside runs/; no tracebacks."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from trading_lib.config import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]
CLI = shutil.which("trading-lib") or str(Path(sys.executable).with_name("trading-lib"))


def _ini(tmp_path, text, name="settings.ini"):
    p = tmp_path / name; p.write_text(text); return p


def _cli(args, cwd, env=None, timeout=180):
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    e = {k: v for k, v in e.items() if not (k.startswith("TRADING_") and k not in (env or {}))}
    t0 = time.monotonic()
    r = subprocess.run([CLI, *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    r.seconds = time.monotonic() - t0
    return r


# ---- item 11: settings --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("section,key", [("risk", "max_order_notional"), ("risk", "max_drawdown_pct"),
                                         ("execution", "initial_cash"), ("approvals", "max_notional")])
def test_infinite_limits_are_refused(tmp_path, section, key):
    p = _ini(tmp_path, f"[{section}]\n# a limit\n{key} = inf\n")
    with pytest.raises(SettingsError, match=rf"settings.ini:3: \[{section}\] {key}: Input should be a finite number \(got 'inf'\)"):
        load_settings(p, environ={})


def test_percent_given_for_a_fraction(tmp_path):
    with pytest.raises(SettingsError, match=r"\[risk\] max_drawdown_pct: 25 is out of range for a fraction: 0.25 means 25 % \(did you mean 0.25\?\)"):
        load_settings(_ini(tmp_path, "[risk]\nmax_drawdown_pct = 25\n"), environ={})
    with pytest.raises(SettingsError, match="daily_loss_limit_pct: 5 is out of range for a fraction"):
        load_settings(_ini(tmp_path, "[risk]\ndaily_loss_limit_pct = 5\n"), environ={})
    assert load_settings(_ini(tmp_path, "[risk]\nmax_drawdown_pct = 0.25\n"), environ={}).risk.max_drawdown_pct == 0.25


@pytest.mark.parametrize("text,msg", [
    ("[risk]\nmax_drawdown_pct = 0.2\nmax_drawdown_pct = 0.3\n", "settings.ini:3: key 'max_drawdown_pct' appears twice in [risk]"),
    ("[risk]\nmax_drawdown_pct = 0.2\n[costs]\n[risk]\n", "settings.ini:4: section [risk] appears twice"),
    ("[risk]\nmax_drawdown_pct 0.2\n", "settings.ini:2: not `key = value`: 'max_drawdown_pct 0.2'"),
    ("top_k = 3\n", "settings.ini:1: a key before any [section]"),
])
def test_malformed_ini_is_a_named_error(tmp_path, text, msg):
    with pytest.raises(SettingsError) as e:
        load_settings(_ini(tmp_path, text), environ={})
    assert msg in str(e.value)


def test_malformed_ini_on_the_command_line_is_not_a_traceback(tmp_path):
    (tmp_path / "settings.ini").write_text("[data]\nsource = embedded\nsource = parquet\n")
    (tmp_path / "bars.csv").write_text("timestamp,symbol,close\n2022-01-03,A,1.0\n")
    r = _cli(["data", "check", str(tmp_path / "bars.csv")], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "settings.ini:3: key 'source' appears twice in [data]" in r.stderr


def test_dashboard_host_other_than_loopback_needs_an_explicit_setting(tmp_path):
    with pytest.raises(SettingsError, match="host = 0.0.0.0 is not a loopback address.*allow_remote = true"):
        load_settings(_ini(tmp_path, "[dashboard]\nhost = 0.0.0.0\n"), environ={})
    with pytest.raises(SettingsError, match="host from environment variable TRADING_DASHBOARD__HOST: host = 192.168.1.5 is not a loopback"):
        load_settings(_ini(tmp_path, ""), environ={"TRADING_DASHBOARD__HOST": "192.168.1.5"})
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert load_settings(_ini(tmp_path, f"[dashboard]\nhost = {host}\n"), environ={}).dashboard.host == host
    s = load_settings(_ini(tmp_path, "[dashboard]\nhost = 0.0.0.0\nallow_remote = true\n"), environ={})
    assert (s.dashboard.host, s.dashboard.allow_remote) == ("0.0.0.0", True)


def test_run_id_cannot_leave_runs(project_copy):
    r = _cli(["run", "live", "-p", "run_id", "../../x", "--no-progress"], project_copy)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "-p run_id: '../../x' is not a valid run id" in r.stderr
    assert not (project_copy / "runs").exists() and not (project_copy.parent / "x").exists()


def test_zero_byte_ledger_is_refused_unless_on_purpose(tmp_path):
    from trading_lib.live import audit
    for name in ("ledger.sqlite", "ledger.jsonl"):
        p = tmp_path / name; p.touch()   # an emptied (truncated) ledger looks exactly like this
        with pytest.raises(Exception, match="0-byte file that Ledger did not create"):
            audit.Ledger(p)
        led = audit.Ledger(p, allow_empty=True)  # created empty on purpose
        led.append("state", {"state": "ACTIVE"})
        assert audit.verify(p).ok and audit.verify(p).n_records == 1
    z = tmp_path / "z.sqlite"; z.touch()
    v = audit.verify(z)
    assert (v.ok, "0-byte file" in v.reason) == (False, True)


def test_audit_verify_of_a_directory_says_it_needs_a_file(tmp_path):
    r = _cli(["audit", "verify", str(tmp_path)], ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{tmp_path} is a directory: audit verify needs the ledger file itself" in r.stderr


# ---- item 11b: job parameters and the command line ------------------------------------------------------------------
def test_malformed_date_fails_at_once_naming_the_parameter(project_copy):
    r = _cli(["run", "train", "-p", "start", "2022-13-01", "--no-progress"], project_copy)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "-p start: '2022-13-01' is not a date (month must be in 1..12)" in r.stderr
    assert not (project_copy / "runs").exists()  # refused before a run directory or a kernel


def _main(args, cwd, monkeypatch, capsys):
    "The command line in this process (same parser and handlers as the `trading-lib` script): (exit code, stderr)."
    from trading_lib.cli import main
    monkeypatch.chdir(cwd)
    rc = main(args)
    return rc, capsys.readouterr().err


def test_start_after_end_fails_at_once(project_copy, monkeypatch, capsys):
    t0 = time.monotonic()
    rc, err = _main(["run", "train", "-p", "start", "2022-06-01", "-p", "end", "2022-01-01", "--no-progress"], project_copy, monkeypatch, capsys)
    assert rc == 2 and "start 2022-06-01 (-p start) is after end 2022-01-01 (-p end)" in err, err
    rc, err = _main(["run", "live", "-p", "end", "2021-06-30", "--no-progress"], project_copy, monkeypatch, capsys)
    assert rc == 2 and "start 2022-01-01 (the default of start in scheduled/live.ipynb) is after end 2021-06-30 (-p end)" in err, err
    assert not (project_copy / "runs").exists() and time.monotonic() - t0 < 60


def test_unknown_model_fails_before_any_data_loads(project_copy, monkeypatch, capsys):
    rc, err = _main(["run", "train", "-p", "models", "[lightgbm, nosuch]", "--no-progress"], project_copy, monkeypatch, capsys)
    assert rc == 2 and "-p models: unknown forecaster 'nosuch' (known: " in err and "lightgbm" in err, err
    assert not (project_copy / "runs").exists()


def test_bad_value_names_where_it_came_from(project_copy, monkeypatch, capsys):
    r = _cli(["run", "train", "-p", "seed", "three", "--no-progress"], project_copy)  # what the user types
    assert r.returncode == 2 and "-p seed: 'three' is not an integer" in r.stderr and "Traceback" not in r.stderr, r.stderr
    rc, err = _main(["run", "train", "-p", "retrain_months", "0", "--no-progress"], project_copy, monkeypatch, capsys)
    assert rc == 2 and "-p retrain_months: [walk_forward] retrain_months: Input should be greater than or equal to 1" in err, err
    monkeypatch.setenv("TRADING_PORTFOLIO__TOP_K", "three")
    rc, err = _main(["run", "train", "--no-progress"], project_copy, monkeypatch, capsys)
    assert rc == 2 and "environment variable TRADING_PORTFOLIO__TOP_K: [portfolio] top_k: Input should be a valid integer" in err, err
    monkeypatch.delenv("TRADING_PORTFOLIO__TOP_K")
    ini = project_copy / "settings.ini"
    lines = ini.read_text().splitlines()
    n = lines.index("top_k = 5") + 1
    lines[n - 1] = "top_k = three"; ini.write_text("\n".join(lines) + "\n")
    rc, err = _main(["run", "train", "--no-progress"], project_copy, monkeypatch, capsys)
    assert rc == 2 and f"settings.ini:{n}: [portfolio] top_k: Input should be a valid integer" in err, err
    assert not (project_copy / "runs").exists()


def test_outside_a_project_a_command_refuses(tmp_path, monkeypatch, capsys):
    (tmp_path / "bars.csv").write_text("timestamp,symbol,close\n2022-01-03,A,1.0\n")
    msg = f"not inside a trading_lib project: no settings.ini in {tmp_path} or any folder above it"
    r = _cli(["run", "no_such_job"], tmp_path)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    rc, err = _main(["data", "check", "bars.csv"], tmp_path, monkeypatch, capsys)
    assert rc == 2 and msg in err, err


def test_piping_into_head_ends_quietly(tmp_path):
    shutil.copy(ROOT / "settings.ini", tmp_path / "settings.ini")
    n = 5000  # ~1 MB of problem lines: far more than a pipe holds
    pd.DataFrame({"timestamp": pd.bdate_range("2000-01-03", periods=n).strftime("%Y-%m-%d"), "symbol": "A",
                  "close": ["n/a"] * n}).to_csv(tmp_path / "bad.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["bash", "-c", f"'{CLI}' data check bad.csv | head -2; echo \"rc=${{PIPESTATUS[0]}}\" >&2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert r.stdout.splitlines()[0].startswith("not a number: symbol='A' timestamp=2000-01-03 field='close' value='n/a'")
    assert len(r.stdout.splitlines()) == 2
    assert "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    assert "rc=141" in r.stderr
