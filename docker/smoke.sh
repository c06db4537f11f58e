#!/usr/bin/env bash
# Run inside the image by `make image-test` (no network): a short train job and the dashboard server's health check.
set -euo pipefail
cd /opt/trading_lib
echo "user: $(id -un) (uid $(id -u)); python: $(python --version); kernels: $(jupyter kernelspec list --json | python -c 'import json,sys; print(sorted(json.load(sys.stdin)["kernelspecs"]))')"
[ "$(id -u)" != 0 ] || { echo "smoke: running as root"; exit 1; }
t0=$(date +%s)
trading-lib run train --no-progress -p models "[lightgbm]" -p symbols "[AAPL, MSFT, JPM, XOM, KO, PFE]" \
  -p start 2000-01-01 -p end 2012-12-31 -p test_start 2010-01-01 -p lgbm_n_estimators 40
echo "smoke: train job finished in $(( $(date +%s) - t0 )) s"
export TRADING_DASHBOARD_TOKEN=smoke-test-token-0123456789
python -m trading_lib.oversight.server --host 127.0.0.1 --port 8866 > /tmp/dashboard.log 2>&1 &
pid=$!
python - <<'PY'
import time, urllib.request
url = "http://127.0.0.1:8866/voila/render/oversight.ipynb?token=smoke-test-token-0123456789"
t0 = time.monotonic(); last = None
while time.monotonic() - t0 < 240:
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            body = r.read().decode(errors="replace")
            if r.status == 200:
                bad = [m for m in ("Traceback", "output_type\": \"error", "Kernel Error") if m in body]
                if bad or "application/vnd.jupyter.widget-view+json" not in body:
                    raise SystemExit(f"smoke: the oversight page rendered without its widgets or with an error: {bad}")
                print(f"smoke: dashboard health check: HTTP {r.status}, {len(body)} bytes with the page's widgets, "
                      f"{time.monotonic() - t0:.1f} s after start"); break
    except OSError as e: last = e
    time.sleep(1)
else: raise SystemExit(f"smoke: dashboard did not answer within 240 s ({last})")
PY
kill "$pid"; wait "$pid" 2>/dev/null || true
echo "smoke: OK"
