"""GPU benchmarks (printed, not tests). With CUDA:

1. training samples/s of every zoo model on CUDA, torch models under bf16 autocast (`torch.autocast("cuda",
   torch.bfloat16)` around `fit`; samples = training rows, validation and calibration included), XGBoost on CUDA;
2. one 500-symbol decision (a forward pass over 500 windows of `lookback` rows) with torch CUDA (fp32 and bf16),
   ONNX Runtime's CUDA execution provider and its TensorRT execution provider (target p99 < 1 ms);
3. Monte Carlo VaR, 1,000,000 paths × 500 assets (one day, normal shocks): torch CUDA and CuPy against NumPy.

Without CUDA (or without CuPy / ORT's GPU providers) it runs what it can on the CPU, at reduced sizes unless
`--full`, and prints a SKIP line with the reason for everything else. The CPU-only decision path (incremental
features, models on arrays) is bench/decision.py.

Run:  .venv/bin/python bench/gpu.py [--full] [--reps 200]
"""
import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

warnings.filterwarnings("ignore")
from trading_lib.analytics.risk_analytics import monte_carlo_var
from trading_lib.models.base import LightGBMForecaster, LSTMForecaster
from trading_lib.models.registry import export_onnx
from trading_lib.models.zoo import CNNLSTMForecaster, GATForecaster, GRUForecaster, TFTForecaster, TransformerForecaster, XGBoostForecaster

ap = argparse.ArgumentParser()
ap.add_argument("--full", action="store_true", help="full sizes on CPU too (slow)")
ap.add_argument("--reps", type=int, default=200); ap.add_argument("--symbols", type=int, default=500)
ap.add_argument("--lookback", type=int, default=20); ap.add_argument("--features", type=int, default=16)
ap.add_argument("--hidden", type=int, default=32); ap.add_argument("--paths", type=int, default=1_000_000)
args = ap.parse_args()
CUDA = torch.cuda.is_available()
FULL = CUDA or args.full
L, F, H, N = args.lookback, args.features, args.hidden, args.symbols
NO_CUDA = "torch.cuda.is_available() is False (no GPU or no CUDA build of torch)"


def skip(what, why): print(f"SKIP {what}: {why}", flush=True)


def pct(a): return f"p50 {np.percentile(a, 50):8.3f} ms  p99 {np.percentile(a, 99):8.3f} ms"


def timeit(fn, reps, sync=lambda: None):
    for _ in range(10): fn()
    sync(); out = np.empty(reps)
    for i in range(reps):
        t0 = time.perf_counter(); fn(); sync(); out[i] = (time.perf_counter() - t0) * 1e3
    return out


def panel(n_sym, n_days, seed=0):
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2020-01-01", periods=n_days, freq="B", tz="UTC").as_unit("ns")
    idx = pd.MultiIndex.from_product([ts, [f"S{i:03d}" for i in range(n_sym)]], names=["timestamp", "symbol"])
    x = rng.normal(size=(len(idx), F))
    feats = pd.DataFrame(x, index=idx, columns=[f"f{i}" for i in range(F)])
    labs = pd.DataFrame({f"fwd_ret_{h}": 0.01 * np.sqrt(h) * (x[:, 0] + rng.normal(size=len(idx))) for h in (1, 5, 20, 60)},
                        index=idx)
    return feats, labs, ts


try:
    import onnxruntime as ort
    providers = ort.get_available_providers()
except ImportError: ort, providers = None, []
try:
    import cupy as cp
    cp.cuda.runtime.getDeviceCount()
except Exception as e: cp, cupy_why = None, f"CuPy unavailable ({type(e).__name__}: {str(e)[:80]})"
print(f"torch {torch.__version__}, CUDA {CUDA}{' (' + torch.cuda.get_device_name() + ')' if CUDA else ''}, "
      f"ORT providers {providers}, CuPy {'yes' if cp is not None else 'no'}, sizes {'full' if FULL else 'reduced (CPU)'}")

# ---- 1. training throughput -------------------------------------------------------------------------------------------
n_train, days = (200, 400) if FULL else (20, 120)
feats, labs, ts = panel(n_train, days)
t = feats.index.get_level_values("timestamp"); cut = ts[int(days * 0.8)]; tr, va = t < cut, t >= cut
win = dict(lookback=L, hidden=H, epochs=1, batch_size=512, lr=1e-3, seed=0, progress=False)
makers = {"lstm": LSTMForecaster, "gru": GRUForecaster, "cnn_lstm": CNNLSTMForecaster,
          "transformer": TransformerForecaster, "tft": TFTForecaster}
print(f"\n== training: {n_train} symbols × {int(tr.sum() / n_train)} days, {F} features, lookback {L}, 1 epoch ==")
fitted = {}
for dev in ["cpu"] + (["cuda"] if CUDA else []):
    for name, klass in makers.items():
        m = klass(**win, device=dev)
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev == "cuda"): m.fit(feats[tr], labs[tr], feats[va], labs[va])
        if dev == "cuda": torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"{name:12s} {dev:4s} {'bf16' if dev == 'cuda' else 'fp32'} {int(tr.sum()) / dt:12,.0f} samples/s  ({dt:.2f} s)")
        if dev == "cpu": fitted[name] = m
    g = GATForecaster(hidden=H, epochs=1, batch_size=32, seed=0, progress=False, device=dev)
    t0 = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev == "cuda"): g.fit(feats[tr], labs[tr], feats[va], labs[va])
    dt = time.perf_counter() - t0
    print(f"{'gat':12s} {dev:4s} {'bf16' if dev == 'cuda' else 'fp32'} {int(tr.sum()) / dt:12,.0f} samples/s  ({dt:.2f} s)")
    x = XGBoostForecaster(n_estimators=50, early_stopping_rounds=10**6, device=dev)
    t0 = time.perf_counter(); x.fit(feats[tr], labs[tr], feats[va], labs[va]); dt = time.perf_counter() - t0
    print(f"{'xgboost':12s} {dev:4s} fp32 {int(tr.sum()) / dt:12,.0f} samples/s  ({dt:.2f} s, 50 rounds × 4 horizons)")
    if dev == "cpu":
        lg = LightGBMForecaster(n_estimators=50, early_stopping_rounds=10**6)
        t0 = time.perf_counter(); lg.fit(feats[tr], labs[tr], feats[va], labs[va]); dt = time.perf_counter() - t0
        print(f"{'lightgbm':12s} cpu  fp32 {int(tr.sum()) / dt:12,.0f} samples/s  ({dt:.2f} s, 50 rounds × 4 horizons)")
if not CUDA: skip("training on CUDA (bf16 autocast), every zoo model", NO_CUDA)
skip("lightgbm on CUDA", "the installed LightGBM wheel is a CPU build (no CUDA tree learner); measured on CPU only")

# ---- 2. one 500-symbol decision: the model's forward pass ------------------------------------------------------------
print(f"\n== decision: one forward pass over {N} windows × {L} rows × {F} features (LSTM) ==")
inf, _, its = panel(N, L + 2, seed=1)
m = fitted["lstm"]
_, xb = m.window_batch(inf[inf.index.get_level_values("timestamp") >= its[2]])
net, x = m.net_.cpu().eval(), torch.from_numpy(xb)
with torch.inference_mode(): ref = net(x).numpy()
reps = args.reps if FULL else 50
with torch.inference_mode(): print(f"torch CPU fp32              {pct(timeit(lambda: net(x), reps))}")
if CUDA:
    gnet, xg = net.to("cuda"), x.to("cuda")
    with torch.inference_mode():
        print(f"torch CUDA fp32             {pct(timeit(lambda: gnet(xg), reps, torch.cuda.synchronize))}")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            print(f"torch CUDA bf16             {pct(timeit(lambda: gnet(xg), reps, torch.cuda.synchronize))}")
    net.cpu()
else: skip("torch CUDA decision", NO_CUDA)
if ort is None: skip("ONNX Runtime (all providers)", "onnxruntime is not installed")
else:
    path = export_onnx(m, Path(tempfile.mkdtemp()) / "lstm.onnx")
    for prov in ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"):
        if prov not in providers:
            skip(f"ONNX Runtime {prov}", f"not among this onnxruntime's providers {providers}"); continue
        try:
            so = ort.SessionOptions(); so.intra_op_num_threads = 1
            sess = ort.InferenceSession(str(path), sess_options=so, providers=[prov])
            name = sess.get_inputs()[0].name
            run = lambda s=sess, n=name: s.run(None, {n: xb})[0]
            err = float(np.abs(run() - ref).max())
            print(f"ORT {prov:24s}{pct(timeit(run, reps))}   (max |ORT − torch| {err:.1e})")
        except Exception as e: skip(f"ONNX Runtime {prov}", f"session failed: {type(e).__name__}: {str(e)[:120]}")

# ---- 3. Monte Carlo VaR ------------------------------------------------------------------------------------------------
n_paths = args.paths if FULL else 50_000
rng = np.random.default_rng(0)
A = rng.normal(size=(N, N)) / np.sqrt(N); cov = 1e-4 * (A @ A.T + 0.5 * np.eye(N)); mu = np.full(N, 2e-4)
w = np.full(N, 1.0 / N)
print(f"\n== Monte Carlo VaR: {n_paths:,} paths × {N} assets, 1 day, normal ==")
def mc(label, fn, sync=lambda: None):
    fn(); sync(); t0 = time.perf_counter(); r = fn(); sync(); dt = time.perf_counter() - t0
    print(f"{label:24s} {dt:8.3f} s  {n_paths / dt:14,.0f} paths/s   VaR99 {r[0.99][0]:.5f}  CVaR99 {r[0.99][1]:.5f}")
mc("NumPy (float64)", lambda: monte_carlo_var(w, mu, cov, levels=(0.99,), n_paths=n_paths))
if CUDA:
    mc("torch CUDA (float32)", lambda: monte_carlo_var(w, mu, cov, levels=(0.99,), n_paths=n_paths, backend="torch",
                                                       device="cuda", chunk=200_000), torch.cuda.synchronize)
else: skip("torch CUDA Monte Carlo VaR", NO_CUDA)
if cp is not None and CUDA:
    def mc_cupy(chunk=200_000):
        Lc = np.linalg.cholesky(cov + 1e-14 * np.eye(N)); b = cp.asarray((Lc.T @ w).astype(np.float32)); m_ = float(w @ mu)
        g = cp.random.default_rng(0); sim = cp.empty(n_paths, dtype=cp.float32)
        for i in range(0, n_paths, chunk):
            k = min(chunk, n_paths - i); sim[i:i + k] = m_ + g.standard_normal((k, N), dtype=cp.float32) @ b
        q = float(cp.quantile(sim, 0.01)); return {0.99: (-q, -float(sim[sim <= q].mean()))}
    mc("CuPy (float32)", mc_cupy, cp.cuda.Device().synchronize)
else: skip("CuPy Monte Carlo VaR", NO_CUDA if not CUDA else cupy_why)
