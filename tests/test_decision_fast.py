"""The live hot path (FeatureState rows -> models.online.OnlineForecaster: LightGBM.predict_array and
LSTM.predict_windows on arrays, the LSTM's standardised rows kept in a ring) gives the same forecasts as the batch path (compute_features over the whole history
-> Forecaster.predict on frames), session by session over a multi-day window of real data."""
import numpy as np
import pytest

from trading_lib.data.sources import EmbeddedSource
from trading_lib.features import FEATURE_NAMES, FeatureState, align_series, compute_features, make_labels
from trading_lib.models.base import LightGBMForecaster, LSTMForecaster
from trading_lib.models.online import OnlineForecaster


@pytest.mark.parametrize("inputs", ["global", "cross_section"])
def test_hot_path_forecasts_equal_batch_forecasts(inputs):
    "`inputs`: the LSTM's input scaling (cross_section: each date's rows z-scored across symbols, also on the hot path)."
    src = EmbeddedSource()
    bars = src.bars(None, "2012-01-01", "2018-12-31")
    times = bars.index.get_level_values(0).unique()
    bench = src.series("SP500"); bench = bench[(bench.index >= times[0]) & (bench.index <= times[-1])]
    F = compute_features(bars, bench, None); L = make_labels(bars, [1, 5, 20])
    t = F.index.get_level_values(0)
    cols = [c for c in FEATURE_NAMES if F[t < times[1200]][c].notna().mean() >= 0.5]
    tr = (t >= times[260]) & (t < times[1200])
    gbm = LightGBMForecaster([1, 5, 20], n_estimators=20).fit(F[tr][cols], L[tr])
    lb = 5
    lstm = LSTMForecaster([1, 5, 20], lookback=lb, hidden=8, epochs=1, device="cpu", progress=False,
                         inputs=inputs).fit(F[tr][cols], L[tr])
    first, n = len(times) - 25, bars.index.get_level_values(1).nunique()
    fs = FeatureState.from_bars(bars.loc[: times[first - 1]], bench, None)
    cidx = [FEATURE_NAMES.index(c) for c in cols]
    on_g, on_l = OnlineForecaster(gbm, fs.symbols, FEATURE_NAMES), OnlineForecaster(lstm, fs.symbols, FEATURE_NAMES)
    assert (on_g.kind, on_l.kind) == ("array", "window")
    for d in range(first - lb + 1, first): on_l.observe(times[d], F.xs(times[d], level="timestamp").to_numpy())
    close = bars["close"].unstack("symbol").reindex(columns=fs.symbols).to_numpy()
    b = align_series(bench, times, "benchmark").to_numpy()
    for d in range(first, len(times)):  # 25 sessions
        row = fs.update(times[d], close[d], b[d])
        x = np.ascontiguousarray(row[:, cidx])
        want_g = gbm.predict(F.loc[[times[d]], cols])["prediction"].to_numpy().reshape(n, 3)
        want_l = lstm.predict(F.loc[times[d - lb - 2]:times[d], cols], start=times[d])["prediction"].to_numpy().reshape(n, 3)
        np.testing.assert_array_equal(on_g.update(times[d], row), want_g, err_msg=f"lightgbm at {times[d]}")
        np.testing.assert_array_equal(gbm.predict_array(x, [20])[:, 0], want_g[:, 2])
        np.testing.assert_array_equal(on_l.update(times[d], row), want_l, err_msg=f"lstm at {times[d]}")
