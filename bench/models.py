"""Model zoo benchmarks (printed, not timed tests).

1. Training throughput (training windows or rows per second, one epoch / one boosting run) per model on CPU, and on
   CUDA when torch sees a GPU.
2. Inference latency of one decision over a 500-symbol universe (one forward pass over 500 windows of `lookback`
   rows): torch CPU and ONNX Runtime CPU (target p99 < 10 ms); on a CUDA host torch GPU, and ONNX Runtime with
   TensorRT / CUDA when present (target p99 < 1 ms). Also the whole `predict()` path (pandas in, forecasts frame out).
Run: taskset -c 0 .venv/bin/python bench/models.py [--threads 1] [--reps 300]
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
from trading_lib.models.base import LightGBMForecaster, LSTMForecaster
from trading_lib.models.registry import OnnxServer, export_onnx, ort_providers
from trading_lib.models.zoo import CNNLSTMForecaster, GATForecaster, GRUForecaster, TFTForecaster, TransformerForecaster, XGBoostForecaster

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=1); ap.add_argument("--reps", type=int, default=300)
ap.add_argument("--symbols", type=int, default=500); ap.add_argument("--train-symbols", type=int, default=50)
ap.add_argument("--days", type=int, default=300); ap.add_argument("--features", type=int, default=16)
ap.add_argument("--lookback", type=int, default=20); ap.add_argument("--hidden", type=int, default=32)
args = ap.parse_args()
torch.set_num_threads(args.threads)
L, F, H = args.lookback, args.features, args.hidden


def panel(n_sym, n_days, seed=0):
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2020-01-01", periods=n_days, freq="B", tz="UTC").as_unit("ns")
    idx = pd.MultiIndex.from_product([ts, [f"S{i:03d}" for i in range(n_sym)]], names=["timestamp", "symbol"])
    x = rng.normal(size=(len(idx), F))
    feats = pd.DataFrame(x, index=idx, columns=[f"f{i}" for i in range(F)])
    labs = pd.DataFrame({f"fwd_ret_{h}": 0.01 * np.sqrt(h) * (x[:, 0] + rng.normal(size=len(idx))) for h in (1, 5, 20, 60)}, index=idx)
    return feats, labs, ts


def pct(a): return f"p50 {np.percentile(a, 50):7.3f} ms  p99 {np.percentile(a, 99):7.3f} ms"


def timeit(fn, reps, sync=lambda: None):
    for _ in range(10): fn()
    sync(); out = np.empty(reps)
    for i in range(reps):
        t0 = time.perf_counter(); fn(); sync(); out[i] = (time.perf_counter() - t0) * 1e3
    return out


devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
print(f"torch {torch.__version__}, threads {args.threads}, devices {devices}, ORT providers {ort_providers()}")
feats, labs, ts = panel(args.train_symbols, args.days)
t = feats.index.get_level_values("timestamp"); cut = ts[int(args.days * 0.8)]
tr, va = t < cut, t >= cut
win = dict(lookback=L, hidden=H, epochs=1, batch_size=512, lr=1e-3, seed=0, progress=False)
makers = {
    "lstm": lambda d: LSTMForecaster(**win, device=d), "gru": lambda d: GRUForecaster(**win, device=d),
    "cnn_lstm": lambda d: CNNLSTMForecaster(**win, device=d), "transformer": lambda d: TransformerForecaster(**win, device=d),
    "tft": lambda d: TFTForecaster(**win, device=d),
    "gat": lambda d: GATForecaster(hidden=H, epochs=1, batch_size=32, seed=0, progress=False, device=d),
    "lightgbm": lambda d: LightGBMForecaster(n_estimators=100, early_stopping_rounds=10**6) if d == "cpu" else None,
    "xgboost": lambda d: XGBoostForecaster(n_estimators=100, early_stopping_rounds=10**6, device=d if d == "cpu" else "auto"),
}
print(f"\n== training throughput: {args.train_symbols} symbols × {int(tr.sum() / args.train_symbols)} training days, "
      f"{F} features, lookback {L}, hidden {H}, 1 epoch (GBMs: 100 rounds × 4 horizons) ==")
fitted = {}
for name, mk in makers.items():
    for d in devices:
        m = mk(d)
        if m is None: continue
        t0 = time.perf_counter(); m.fit(feats[tr], labs[tr], feats[va], labs[va]); dt = time.perf_counter() - t0
        n = int(tr.sum())                        # rows (each row = one window / one graph node / one GBM sample)
        print(f"{name:12s} {d:5s} fit {dt:7.2f} s   {n / dt:10,.0f} samples/s (incl. validation + calibration)")
        if d == "cpu": fitted[name] = m

print(f"\n== inference: one decision over {args.symbols} symbols (one batch of {args.symbols} windows × {L} rows × {F} features) ==")
inf_feats, _, its = panel(args.symbols, L + 2, seed=1)
tmp = Path(tempfile.mkdtemp())
for name in ("lstm", "gru", "cnn_lstm", "transformer", "tft"):
    m = fitted[name]
    _, xb = m.window_batch(inf_feats[inf_feats.index.get_level_values("timestamp") >= its[2]])
    assert len(xb) == args.symbols
    net, x = m.net_.cpu().eval(), torch.from_numpy(xb)
    with torch.inference_mode():
        print(f"{name:12s} torch CPU        {pct(timeit(lambda: net(x), args.reps))}")
    srv = OnnxServer(m, export_onnx(m, tmp / f"{name}.onnx"), prefer="cpu", intra_op_threads=args.threads)
    with torch.inference_mode(): err = np.abs(srv.run(xb) - net(x).numpy()).max()
    print(f"{name:12s} ONNX Runtime CPU {pct(timeit(lambda: srv.run(xb), args.reps))}   (max |ORT − torch| {err:.1e})")
    if "cuda" in devices:
        g, xg = net.to("cuda"), x.to("cuda")
        with torch.inference_mode():
            print(f"{name:12s} torch CUDA fp32  {pct(timeit(lambda: g(xg), args.reps, torch.cuda.synchronize))}")
            with torch.autocast("cuda", dtype=torch.bfloat16):
                print(f"{name:12s} torch CUDA bf16  {pct(timeit(lambda: g(xg), args.reps, torch.cuda.synchronize))}")
        net.cpu()
        gsrv = OnnxServer(m, tmp / f"{name}.onnx", prefer="auto")
        if gsrv.provider_ != "CPUExecutionProvider":
            print(f"{name:12s} ORT {gsrv.provider_:22s} {pct(timeit(lambda: gsrv.run(xb), args.reps))}")
        else: print(f"{name:12s} ORT GPU providers absent (TensorRT/CUDA EP not installed): not measured")
    # the whole serving path: features frame (history rows included) → forecasts frame
    print(f"{name:12s} ORT predict()    {pct(timeit(lambda: srv.predict(inf_feats, start=its[-1]), max(args.reps // 5, 20)))}"
          "   (pandas in → forecasts frame out)")
for name in ("lightgbm", "xgboost", "gat"):
    m = fitted[name]
    g = panel(min(args.symbols, args.train_symbols) if name == "gat" else args.symbols, 1, seed=2)[0]
    print(f"{name:12s} predict() CPU    {pct(timeit(lambda: m.predict(g), max(args.reps // 5, 20)))}   ({len(g)} symbols)")
