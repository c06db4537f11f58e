"""No look-ahead, end to end: change every bar after a date and check that every feature and every out-of-sample
forecast up to that date is unchanged (while later ones do change, so the test can fail)."""
import numpy as np
import pandas as pd
import pytest

from trading_lib.config import load_settings
from trading_lib.data.sources import EmbeddedSource, validate_bars
from trading_lib.features import compute_features, make_labels
from trading_lib.research.backtest import walk_forward

CUT = pd.Timestamp("2011-06-30", tz="UTC")


def _perturb(bars, bench, seed=1):
    rng = np.random.default_rng(seed)
    b = bars.copy(); t = b.index.get_level_values("timestamp")
    after = t > CUT
    b.loc[after, "close"] = b.loc[after, "close"] * np.exp(rng.normal(0, 0.05, after.sum()))
    m = bench.copy(); m[m.index > CUT] *= np.exp(rng.normal(0, 0.05, (m.index > CUT).sum()))
    return b, m


def _pipeline(bars, bench, settings):
    feats = compute_features(bars, bench, None, beta_window=settings.features.beta_window)
    labels = make_labels(bars, settings.models.horizons)
    wf = walk_forward(feats, labels, settings, progress=False)
    return feats, wf.forecasts


@pytest.mark.parametrize("refit", [False, True], ids=["fit", "refit"])
def test_features_and_forecasts_do_not_see_the_future(refit):
    """With refit, each fold's models are refit on training + validation rows up to train_end (the embargo): the
    forecasts up to the cut must still ignore every price after it."""
    s = load_settings(environ={}).replace(models__lstm_epochs=1, models__lgbm_n_estimators=30,
                                          walk_forward__test_start="2010-01-01", walk_forward__retrain_months=12,
                                          walk_forward__refit="all" if refit else "", **({"models__n_seeds": 1} if refit else {}))
    src = EmbeddedSource()
    bars = src.bars(["AAPL", "JPM", "KO", "XOM"], "2002-01-01", "2012-12-31")
    bench = src.series("SP500")
    bench = bench[(bench.index >= bars.index.get_level_values(0).min()) & (bench.index <= bars.index.get_level_values(0).max())]
    f1, fc1 = _pipeline(bars, bench, s)
    b2, m2 = _perturb(bars, bench)
    validate_bars(b2, max_abs_return=1.0)  # the perturbed data is still valid input
    f2, fc2 = _pipeline(b2, m2, s)
    past = f1.index.get_level_values("timestamp") <= CUT
    pd.testing.assert_frame_equal(f1[past], f2[past])
    assert not f1[~past].equals(f2[~past])
    p1, p2 = fc1[fc1["timestamp"] <= CUT], fc2[fc2["timestamp"] <= CUT]
    assert len(p1) > 1000 and set(p1["model"]) == {"lightgbm", "lstm"}
    pd.testing.assert_frame_equal(p1.reset_index(drop=True), p2.reset_index(drop=True))
    later1, later2 = fc1[fc1["timestamp"] > CUT], fc2[fc2["timestamp"] > CUT]
    assert not np.allclose(later1["prediction"].to_numpy(), later2["prediction"].to_numpy())
