"""Frozen copy of trading_lib/features.py as of main 2069b24 (pandas/NumPy/TA-Lib path, before the compiled kernel):
the reference that tests/test_features_fast.py compares the current features with. Not a library module."""
# %% ../nbs/02_features.ipynb #346702da
from __future__ import annotations

import numpy as np
import pandas as pd
import talib


# %% ../nbs/02_features.ipynb #79144bb2
def _fmt_ts(ts) -> str: return pd.Timestamp(ts).strftime("%Y-%m-%d")

class _Panel:
    "Wide view of long bars: `times` (T,) UTC index, `symbols` (N,), `pos` flat row positions into (T*N), or None if identity."
    def __init__(self, times, symbols, pos): self.times, self.symbols, self.pos = times, symbols, pos
    @property
    def shape(self): return len(self.times), len(self.symbols)
    def wide(self, values: np.ndarray) -> np.ndarray:
        "Long (n_rows,) values → (T, N) float64 array, NaN where a symbol has no bar."
        T, N = self.shape
        if self.pos is None: return np.asarray(values, dtype="float64").reshape(T, N).copy()
        out = np.full(T * N, np.nan); out[self.pos] = values
        return out.reshape(T, N)
    def long(self, a: np.ndarray) -> np.ndarray:
        "(T, N) → long (n_rows,) in the bars' row order."
        T, N = self.shape
        if a.ndim == 2 and a.shape[1] == 1 and N > 1:  # a per-date column, broadcast over symbols
            return np.repeat(a[:, 0], N) if self.pos is None else a[self.pos // N, 0]
        flat = np.ascontiguousarray(a).reshape(-1)
        return flat if self.pos is None else flat[self.pos]
    def long_into(self, dst: np.ndarray, a: np.ndarray) -> None:
        "Write (T, N) or per-date (T, 1) `a` into the long row `dst` (n_rows,) without a temporary when possible."
        if self.pos is None: dst.reshape(self.shape)[...] = a
        else: dst[...] = self.long(a)

def _panel(bars: pd.DataFrame) -> _Panel:
    if not isinstance(bars, pd.DataFrame): raise TypeError(f"bars must be a DataFrame, got {type(bars).__name__}")
    idx = bars.index
    if not isinstance(idx, pd.MultiIndex) or list(idx.names) != ["timestamp", "symbol"]:
        raise ValueError(f"bars must be indexed by a MultiIndex named ('timestamp', 'symbol'), got names {list(idx.names)}")
    if "close" not in bars.columns: raise ValueError(f"bars has no 'close' column (columns: {list(bars.columns)})")
    if len(bars) == 0: raise ValueError("bars is empty")
    idx = idx.remove_unused_levels()
    tl, sl = idx.levels
    if not isinstance(tl.dtype, pd.DatetimeTZDtype) or str(tl.tz) != "UTC":
        raise ValueError(f"bars timestamp level must be tz-aware UTC datetime64, got dtype {tl.dtype}")
    tc, sc = idx.codes
    if (tc < 0).any() or (sc < 0).any():
        i = int(np.argmax((tc < 0) | (sc < 0)))
        raise ValueError(f"bars row {i} has a missing timestamp or symbol: {idx[i]!r}")
    if not tl.is_monotonic_increasing:  # levels not sorted: factorize with sorting
        tc, tl = pd.factorize(idx.get_level_values(0), sort=True)
    T, N = len(tl), len(sl)
    pos = np.asarray(tc, dtype=np.int64) * N + np.asarray(sc, dtype=np.int64)
    counts = np.bincount(pos, minlength=T * N)
    if counts.max() > 1:
        t, s = divmod(int(np.argmax(counts)), N)
        raise ValueError(f"bars has duplicate rows for symbol {sl[s]!r} at {_fmt_ts(tl[t])}")
    close = bars["close"].to_numpy(dtype="float64")
    bad = ~(np.isnan(close) | (np.isfinite(close) & (close > 0)))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"bars field 'close' must be positive and finite (NaN = missing): symbol {idx[i][1]!r} at "
                         f"{_fmt_ts(idx[i][0])} has close={float(close[i])!r}")
    identity = len(pos) == T * N and bool((pos == np.arange(T * N)).all())
    return _Panel(tl.rename("timestamp"), sl, None if identity else pos)

# %% ../nbs/02_features.ipynb #55feca73
def align_series(s: pd.Series, times: pd.DatetimeIndex, name: str, max_stale: int = 0, positive: bool = True) -> pd.Series:
    """Align a daily series (benchmark closes, VIX levels) to the panel timestamps `times` (tz-aware UTC).
    Exact-timestamp `reindex`; with `max_stale > 0` a missing date takes the last EARLIER value for at most `max_stale`
    consecutive panel dates (backward-looking ffill only; the filled dates are listed in `attrs['filled']`).
    Errors: tz-naive or duplicate index, non-positive values when `positive`."""
    if not isinstance(s, pd.Series): raise TypeError(f"{name} must be a pandas Series, got {type(s).__name__}")
    if not isinstance(s.index, pd.DatetimeIndex) or s.index.tz is None:
        raise ValueError(f"{name} must be indexed by tz-aware timestamps (UTC), got {s.index.dtype}")
    s = s.astype("float64"); s.index = s.index.tz_convert("UTC")
    if s.index.has_duplicates:
        raise ValueError(f"{name} has duplicate timestamps, e.g. {_fmt_ts(s.index[s.index.duplicated()][0])}")
    if positive and (s <= 0).any():
        t = s.index[(s <= 0).to_numpy()][0]
        raise ValueError(f"{name} must be positive: {_fmt_ts(t)} has {s[t]!r}")
    s = s.sort_index()
    out = s.reindex(times)
    filled = []
    if max_stale > 0:
        f = out.ffill(limit=max_stale)
        filled = list(out.index[out.isna() & f.notna()]); out = f
    out.attrs = {"filled": filled}
    return out.rename(name)

# %% ../nbs/02_features.ipynb #36ffc5b3
_ANN = np.sqrt(252.0)

def _lag(a: np.ndarray, h: int) -> np.ndarray:
    "Value `h` rows earlier along axis 0 (NaN for the first `h` rows)."
    out = np.full_like(a, np.nan)
    if h < len(a): out[h:] = a[: len(a) - h]
    return out

def _roll(a: np.ndarray, w: int):
    "pandas rolling window over axis 0 of a 1-D or 2-D array; NaN unless all `w` values are present."
    return (pd.Series(a) if a.ndim == 1 else pd.DataFrame(a, copy=False)).rolling(w, min_periods=w)

def _np(x) -> np.ndarray: return x.to_numpy(dtype="float64")

def _cumsum0(x: np.ndarray) -> np.ndarray:
    "np.cumsum(x, axis=0) for a (T, N) array, bit-identical, computed row by row (≈3× faster than numpy's axis-0 accumulate)."
    out = np.empty_like(x); out[0] = x[0]
    for t in range(1, len(x)): np.add(out[t - 1], x[t], out=out[t])
    return out

def _wcount(x: np.ndarray, w: int) -> np.ndarray:
    "Number of non-NaN values in the trailing `w` rows (row t counts rows max(0, t-w+1)..t)."
    cn = np.cumsum(~np.isnan(x), axis=0, dtype=np.int32)
    n = cn.copy(); n[w:] -= cn[:-w]
    return n

def _wsum(x: np.ndarray, w: int, n: np.ndarray | None = None) -> np.ndarray:
    """Trailing `w`-row sums along axis 0 of a (T, N) array by cumulative sums (vectorized over all columns);
    NaN unless all `w` values in the window are present (`n`: `_wcount(x, w)` if already known). Row t reads rows
    t-w+1..t only, so it is exactly unaffected by later rows. Rounding error ~1e-16 × |cumulative sum|."""
    if n is None: n = _wcount(x, w)
    cs = _cumsum0(np.where(np.isnan(x), 0.0, x))
    out = cs.copy(); out[w:] -= cs[:-w]
    out[n < w] = np.nan
    return out

def _wstd(x: np.ndarray, w: int) -> np.ndarray:
    "Trailing `w`-row sample std (ddof=1) along axis 0; NaN unless the window is complete. See `_wsum`."
    n = _wcount(x, w); s1, s2 = _wsum(x, w, n), _wsum(x * x, w, n)
    return np.sqrt(np.maximum(s2 - s1 * s1 / w, 0.0) / (w - 1))  # maximum: rounding below 0 only

def _per_symbol(C: np.ndarray, fn, n_out: int) -> list[np.ndarray]:
    """Apply a 1-D TA-Lib function `fn(close) -> array | tuple` to each column of `C` over that symbol's own bars
    (missing bars skipped, results scattered back; NaN at missing bars). Returns `n_out` (T, N) arrays."""
    outs = [np.full_like(C, np.nan) for _ in range(n_out)]
    for j in range(C.shape[1]):
        col = C[:, j]; ok = ~np.isnan(col)
        n = int(ok.sum())
        if n == 0: continue
        full = n == len(col)
        r = fn(np.ascontiguousarray(col) if full else col[ok])
        r = r if isinstance(r, tuple) else (r,)
        for o, x in zip(outs, r):
            if full: o[:, j] = x
            else: o[ok, j] = x
    return outs

def _cs_rank(a: np.ndarray) -> np.ndarray:
    """Per-row (per-date) percentile rank in [0, 1]: (rank - 1) / (n - 1) with average ranks for ties, n = symbols
    present that date; 0.5 when n == 1; NaN stays NaN. Vectorized: one argsort per panel, tie groups by accumulate."""
    T, N = a.shape
    order = np.argsort(a, axis=1)  # NaN sort last; the order within ties does not matter
    s = np.take_along_axis(a, order, axis=1)
    j = np.arange(N)
    new = np.ones((T, N), bool); new[:, 1:] = s[:, 1:] != s[:, :-1]  # first element of each tie group (NaN≠NaN)
    if new.all(): rank2 = 2.0 * j  # no ties anywhere: rank = position (the common case for continuous features)
    else:
        last = np.ones((T, N), bool); last[:, :-1] = new[:, 1:]  # last element of each tie group
        start = np.maximum.accumulate(np.where(new, j, 0), axis=1)
        end = np.minimum.accumulate(np.where(last, j, N)[:, ::-1], axis=1)[:, ::-1]
        rank2 = start + end  # twice the average 0-based rank of the tie group
    n = np.sum(~np.isnan(a), axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(n > 1, rank2 / (2.0 * (n - 1)), 0.5)
    out = np.empty_like(a); np.put_along_axis(out, order, pct, axis=1)
    out[np.isnan(a)] = np.nan
    return out

def _cs_z(a: np.ndarray) -> np.ndarray:
    "Per-row z-score (x - mean) / std over the symbols present that date (population std); NaN if std is 0 or n < 2."
    n = np.sum(~np.isnan(a), axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.nanmean(np.where(n > 0, a, 0.0), axis=1, keepdims=True)
        sd = np.sqrt(np.nanmean(np.where(n > 0, (a - m) ** 2, 0.0), axis=1, keepdims=True))
        return np.where((n > 1) & (sd > 0), (a - m) / sd, np.nan)

# %% ../nbs/02_features.ipynb #3bcc1ac9
_CS = [("cs_rank", "ret_5"), ("cs_rank", "ret_20"), ("cs_rank", "mom_12_1"), ("cs_rank", "vol_20"),
       ("cs_z", "ret_20"), ("cs_z", "mom_12_1"), ("cs_z", "vol_20"), ("cs_z", "beta")]
FEATURE_NAMES: list[str] = (
    ["ret_1", "ret_5", "ret_20", "ret_60", "logret_1", "vol_20", "vol_60", "rsi_14", "macd", "macd_signal",
     "macd_hist", "bb_pctb", "mom_12_1", "dist_52w_high", "beta", "resid_vol"]
    + [f"{k}_{f}" for k, f in _CS]
    + ["mkt_ret_20", "mkt_ret_60", "mkt_vol_20", "mkt_dist_ma200", "vix", "vix_chg_20"])

def feature_names() -> list[str]:
    "The columns `compute_features` returns, in order."
    return list(FEATURE_NAMES)

def _symbol_features(C: np.ndarray, Rm: np.ndarray, beta_window: int, put) -> None:
    """Per-symbol features on the wide close array C (T, N) and the benchmark's simple returns Rm (T,).
    Each (T, N) result is handed to `put(name, array)` as soon as it exists (streamed into the output, so the
    temporaries stay few)."""
    lag1 = _lag(C, 1)
    r = C / lag1 - 1.0; put("ret_1", r)
    for h in (5, 20, 60): put(f"ret_{h}", C / _lag(C, h) - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"): lr = np.log(C / lag1)
    del lag1
    put("logret_1", lr)
    put("vol_20", _wstd(lr, 20) * _ANN)
    put("vol_60", _wstd(lr, 60) * _ANN)
    del lr
    put("rsi_14", _per_symbol(C, lambda c: talib.RSI(c, timeperiod=14), 1)[0])
    m, s, h = _per_symbol(C, lambda c: talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9), 3)
    put("macd", m / C); put("macd_signal", s / C); put("macd_hist", h / C)
    del m, s, h
    up, _, lo = _per_symbol(C, lambda c: talib.BBANDS(c, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0), 3)
    # %b is undefined when the band has (numerically) zero width — 20 identical closes: NaN, not ±inf
    width = up - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        put("bb_pctb", np.where(width > 1e-9 * np.abs(C), (C - lo) / width, np.nan))
    del up, lo
    put("mom_12_1", _lag(C, 21) / _lag(C, 252) - 1.0)
    put("dist_52w_high", C / _np(_roll(C, 252).max()) - 1.0)
    # beta / residual vol: rolling moments on a common NaN mask so r and r_m always cover the same days
    gap = np.isnan(r) | np.isnan(Rm)[:, None]  # a missing stock OR benchmark return
    r = np.where(gap, np.nan, r); rm = np.where(gap, np.nan, Rm[:, None])
    w = beta_window
    n = _wcount(r, w)  # r and rm share their NaN mask, hence one window count
    mr, mm = _wsum(r, w, n) / w, _wsum(rm, w, n) / w
    cov = _wsum(r * rm, w, n) / w - mr * mm
    var_m = _wsum(rm * rm, w, n) / w - mm * mm
    var_r = _wsum(r * r, w, n) / w - mr * mr
    del mr, mm, rm
    with np.errstate(divide="ignore", invalid="ignore"):
        put("beta", np.where(var_m > 0, cov / var_m, np.nan))
        # OLS identity; np.maximum only absorbs floating-point rounding below zero (a residual variance is >= 0)
        rv = np.maximum(var_r - cov * cov / var_m, 0.0) * (w / (w - 1.0))
        put("resid_vol", np.where(var_m > 0, np.sqrt(rv) * _ANN, np.nan))

def _market_features(b: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    "Benchmark closes b (T,) and VIX levels v (T,) on the panel calendar → (T,) market features."
    with np.errstate(divide="ignore", invalid="ignore"): blr = np.log(b / _lag(b, 1))
    return {"mkt_ret_20": b / _lag(b, 20) - 1.0, "mkt_ret_60": b / _lag(b, 60) - 1.0,
            "mkt_vol_20": _np(_roll(blr, 20).std()) * _ANN,
            "mkt_dist_ma200": b / _np(_roll(b, 200).mean()) - 1.0,
            "vix": v.copy(), "vix_chg_20": v - _lag(v, 20)}

# %% ../nbs/02_features.ipynb #087eb2e0
def compute_features(bars: pd.DataFrame, benchmark: pd.Series, vix: pd.Series | None = None,
                     beta_window: int = 120, benchmark_max_stale: int = 0) -> pd.DataFrame:
    """Features of every bar. `bars`: long DataFrame indexed by (timestamp UTC, symbol) with a float64 `close`
    (adjusted; NaN = missing bar). `benchmark`: Series of index closes indexed by tz-aware timestamps; `vix`: Series of
    VIX levels (index points) or None (→ NaN VIX features). Both are aligned to the bars' timestamps by exact
    timestamp (see `align_series`; `benchmark_max_stale` > 0 allows a reported, backward-looking carry of the last
    benchmark close). Returns a DataFrame indexed like `bars` with float64 columns `FEATURE_NAMES`; row t uses data
    at timestamps <= t only; leading rows are NaN during each feature's warm-up (up to 252 bars).
    Units: returns and volatilities are fractions (vol annualised with √252), RSI 0-100, MACD ÷ close, beta unitless.
    Errors: malformed index, duplicate rows, non-positive close (naming symbol and date), bad benchmark/VIX index."""
    if beta_window < 20: raise ValueError(f"beta_window must be >= 20 trading days, got {beta_window}")
    p = _panel(bars)
    C = p.wide(bars["close"].to_numpy(dtype="float64"))
    b = align_series(benchmark, p.times, "benchmark", max_stale=benchmark_max_stale)
    v = (align_series(vix, p.times, "vix", positive=True) if vix is not None
         else pd.Series(np.nan, index=p.times))
    bv = _np(b)
    out = np.empty((len(FEATURE_NAMES), len(bars)), dtype="float64")
    col = {k: i for i, k in enumerate(FEATURE_NAMES)}
    cs_inputs = {name for _, name in _CS}; keep = {}
    def put(k, a):
        p.long_into(out[col[k]], a)
        if k in cs_inputs: keep[k] = a  # noqa: F821  (defined above; `del keep` after the closure confuses the check)
    _symbol_features(C, bv / _lag(bv, 1) - 1.0, beta_window, put)
    for k, name in _CS: put(f"{k}_{name}", (_cs_rank if k == "cs_rank" else _cs_z)(keep[name]))
    del keep
    for k, x in _market_features(bv, _np(v)).items(): put(k, x[:, None])  # per-date, broadcast over symbols
    df = pd.DataFrame(out.T, index=bars.index, columns=list(FEATURE_NAMES), copy=False)
    df.attrs = {"beta_window": beta_window, "benchmark_filled": [str(t) for t in b.attrs["filled"]],
                "vix": vix is not None}
    return df

# %% ../nbs/02_features.ipynb #cd219412
def make_labels(bars: pd.DataFrame, horizons=(1, 5, 20, 60)) -> pd.DataFrame:
    """Forward simple returns per symbol: column `fwd_ret_{h}` = close[t+h] / close[t] - 1 (fraction), with t+h counted
    in bars of the panel calendar; NaN where t+h is beyond the data or either bar is missing.
    Returns a float64 DataFrame indexed like `bars`. Errors: as `compute_features`, plus a non-positive horizon."""
    hs = [int(h) for h in horizons]
    if not hs or any(h <= 0 for h in hs): raise ValueError(f"horizons must be positive bar counts, got {list(horizons)}")
    p = _panel(bars); C = p.wide(bars["close"].to_numpy(dtype="float64"))
    out = {}
    for h in hs:
        fut = np.full_like(C, np.nan)
        if h < len(C): fut[: len(C) - h] = C[h:]
        out[f"fwd_ret_{h}"] = p.long(fut / C - 1.0)
    return pd.DataFrame(out, index=bars.index)

# %% ../nbs/02_features.ipynb #f0b1cd5b
def assert_no_lookahead(fn, bars: pd.DataFrame, benchmark: pd.Series, vix: pd.Series | None, cutoff,
                        seed: int = 0) -> None:
    """Raise AssertionError naming the columns whose values at timestamps <= `cutoff` change when all bars,
    benchmark and VIX values after `cutoff` are multiplied by lognormal noise (σ = 5%, seed `seed`).
    `fn(bars, benchmark, vix) -> DataFrame` indexed like `bars`."""
    cut = pd.Timestamp(cutoff); cut = cut.tz_localize("UTC") if cut.tz is None else cut.tz_convert("UTC")
    rng = np.random.default_rng(seed)
    def perturb(x):
        if x is None: return None
        x = x.copy(); ts = x.index.get_level_values(0) if isinstance(x.index, pd.MultiIndex) else x.index
        after = np.asarray(ts > cut)
        cols = [c for c in ["open", "high", "low", "close"] if c in getattr(x, "columns", [])] or None
        noise = np.exp(0.05 * rng.standard_normal(int(after.sum())))
        if cols is None: x[after] = x[after] * noise
        else:
            for c in cols: x.loc[after, c] = x.loc[after, c].to_numpy() * noise
        return x
    if not np.asarray(bars.index.get_level_values(0) > cut).any(): raise ValueError(f"no bars after cutoff {cut}")
    a, b = fn(bars, benchmark, vix), fn(perturb(bars), perturb(benchmark), perturb(vix))
    keep = np.asarray(a.index.get_level_values(0) <= cut)
    bad = []
    for c in a.columns:
        try: np.testing.assert_array_equal(a[c].to_numpy()[keep], b[c].to_numpy()[keep])
        except AssertionError: bad.append(c)
    if bad: raise AssertionError(f"look-ahead: values at or before {_fmt_ts(cut)} change with later data in columns {bad}")

# %% ../nbs/02_features.ipynb #464f671b
def synthetic_bars(n_symbols: int = 500, n_days: int = 6300, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Random-walk closes-only panel in the bars schema: (n_days × n_symbols) rows indexed by (timestamp UTC business
    days from 2000-01-03, symbol 'S0000'...), float64 open/high/low/volume NaN and close > 0, plus the market index as
    a benchmark close Series (starts at 1000). Returns (bars, benchmark)."""
    if n_symbols < 1 or n_days < 2: raise ValueError(f"need n_symbols >= 1 and n_days >= 2, got {n_symbols}, {n_days}")
    rng = np.random.default_rng(seed)
    z = rng.standard_t(5, n_days) / np.sqrt(5 / 3)  # unit-variance Student-t shocks
    sig2 = np.empty(n_days); rm = np.empty(n_days); sig2[0] = 1e-4
    for i in range(n_days):  # GARCH(1,1): omega, alpha, beta chosen for ~16% annual vol
        if i: sig2[i] = 1e-6 + 0.08 * rm[i - 1] ** 2 + 0.91 * sig2[i - 1]
        rm[i] = 3e-4 + np.sqrt(sig2[i]) * z[i]
    beta = rng.uniform(0.5, 1.5, n_symbols); idio = rng.uniform(0.01, 0.03, n_symbols)
    lr = np.log1p(rm)[:, None] * beta + idio * rng.standard_normal((n_days, n_symbols)) - 0.5 * idio ** 2
    close = np.exp(np.log(rng.lognormal(3.5, 0.8, n_symbols)) + np.cumsum(lr, axis=0))
    times = pd.bdate_range("2000-01-03", periods=n_days, tz="UTC", name="timestamp").as_unit("ns")
    syms = pd.Index([f"S{i:04d}" for i in range(n_symbols)], name="symbol")
    idx = pd.MultiIndex.from_product([times, syms], names=["timestamp", "symbol"])
    nan = np.full(n_days * n_symbols, np.nan)
    bars = pd.DataFrame({"open": nan, "high": nan, "low": nan, "close": close.reshape(-1), "volume": nan.copy()},
                        index=idx)
    bars.attrs["provenance"] = {"source": "synthetic_bars", "n_symbols": n_symbols, "n_days": n_days, "seed": seed}
    bench = pd.Series(1000.0 * np.cumprod(1 + rm), index=times, name="benchmark")
    return bars, bench

# %% ../nbs/02_features.ipynb #718006a2
def build_dataset(market, settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    "Features and labels of `market` (a `data.sources.MarketData`): (timestamp, symbol)-indexed DataFrames, per `settings` (features, models.horizons)."
    vix = market.vix if settings.features.use_vix else None
    feats = compute_features(market.bars, market.benchmark, vix, beta_window=settings.features.beta_window)
    labels = make_labels(market.bars, settings.models.horizons)
    return feats, labels
