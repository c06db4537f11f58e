"""Issue 12: the live trader forecasts on the hot path. `ChampionForecasts` serves each champion through
`models.online.OnlineForecaster` (arrays, the window models' standardised rows in a ring); its forecasts and scores
must equal, bit for bit, what the version's own `predict` gives on the frame of the same sessions (the former path,
recomputed here as the reference), on real data, session by session over six weeks: LightGBM, an LSTM with
cross-sectional inputs, the same LSTM served by ONNX Runtime, a champion promoted mid-run (new feature schema), and
sessions skipped (the forecaster catches up, or starts afresh when too far behind)."""
import numpy as np
import pandas as pd
import pytest

from trading_lib.config import load_settings
from trading_lib.data.sources import load_market
from trading_lib.features import build_dataset
from trading_lib.live.trader import ChampionForecasts
from trading_lib.models.base import LightGBMForecaster, LSTMForecaster
from trading_lib.models.registry import ModelRegistry, OnnxServer
from trading_lib.trading.strategy import ensemble_scores

SYMS = ["AAPL", "JPM", "KO", "XOM", "PFE", "MSFT", "CVX", "WMT"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    s = load_settings(environ={}).replace(universe__symbols=",".join(SYMS), data__start="2012-01-01", data__end="2019-08-30",
                                          models__names="lightgbm,lstm", portfolio__rebalance="D", models__lstm_lookback=10)
    market = load_market(s)
    feats, labels = build_dataset(market, s)
    t = feats.index.get_level_values("timestamp")
    cols = [c for c in feats.columns if c not in ("vix", "vix_chg_20")]
    tr = t <= "2017-12-29"
    reg = ModelRegistry(tmp_path_factory.mktemp("online") / "registry")
    gbm = LightGBMForecaster(horizons=s.models.horizons, n_estimators=30, seed=1).fit(feats.loc[tr, cols], labels.loc[tr])
    lstm = LSTMForecaster(horizons=s.models.horizons, lookback=10, hidden=8, epochs=1, device="cpu", progress=False,
                          inputs="cross_section").fit(feats.loc[tr, cols], labels.loc[tr])
    reg.register(gbm, "lightgbm", training_window=("2012-01-03", "2017-12-29"), champion=True)
    reg.register(lstm, "lstm", training_window=("2012-01-03", "2017-12-29"), champion=True)
    gbm2 = LightGBMForecaster(horizons=s.models.horizons, n_estimators=30, seed=2).fit(feats.loc[tr, cols[:-3]], labels.loc[tr])
    v2 = reg.register(gbm2, "lightgbm", training_window=("2012-01-03", "2017-12-29"))
    return s, market, feats, labels, reg, v2


def reference(cf: ChampionForecasts, ts) -> pd.DataFrame:
    "The former path: each pinned version's `predict` on the frame of the last lstm_lookback + 6 dates."
    d = cf._dates
    lo = d[max(int(d.searchsorted(ts)) - cf.settings.models.lstm_lookback - 5, 0)]
    X = cf.feats.loc[lo:ts]
    parts = [f.predict(X[cols], start=ts).assign(model=m)
             for m, v in cf.model_versions.items() for f, cols in [cf._loaded[(m, v)]]]
    return pd.concat(parts, ignore_index=True)


def check_sessions(cf, sessions):
    for ts in sessions:
        cf.begin_session(ts)
        want, got = reference(cf, ts), cf.forecasts
        assert len(got) == len(want) == len(SYMS) * 4 * 2, ts
        for c in ["timestamp", "symbol", "horizon", "model"]:
            assert (got[c].to_numpy() == want[c].to_numpy()).all(), (ts, c)
        for c in ["prediction", "confidence"]:
            np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=f"{c} at {ts}")
        i = cf.sessions.get_loc(ts)
        sc, mu, cfd = ensemble_scores(want[want["horizon"] == cf.horizon], cf.horizon, cf.sessions[i:i + 1], cf.symbols, cf.models)
        np.testing.assert_array_equal(cf.score[i], sc[0]); np.testing.assert_array_equal(cf.mu[i], mu[0])
        np.testing.assert_array_equal(cf.conf[i], cfd[0])


def test_champion_forecasts_on_the_hot_path_equal_the_frame_path(setup):
    s, market, feats, labels, reg, v2 = setup
    cf = ChampionForecasts(market, s, reg, features=(feats, labels))
    days = feats.index.get_level_values("timestamp").unique()
    sessions = days[(days >= "2019-06-03") & (days <= "2019-08-30")]
    cf.prepare(SYMS, sessions)
    check_sessions(cf, sessions[:20])
    kinds = {m: on.kind for (m, v), (on, k) in cf._online.items()}
    assert kinds == {"lightgbm": "array", "lstm": "window"}
    reg.promote("lightgbm", v2)  # a new champion with 27 of the 30 features
    check_sessions(cf, sessions[20:30])
    assert cf.model_versions["lightgbm"] == v2 and cf._loaded[("lightgbm", v2)][1] == cf._loaded[("lightgbm", "v0001")][1][:-3]
    check_sessions(cf, sessions[33:36])   # two dates skipped: the window forecaster catches up
    check_sessions(cf, sessions[55:])     # 19 skipped (> lookback + 6): it starts afresh from the last 16 dates
    on, k = cf._online[("lstm", "v0001")]
    assert on.n_sessions == 16 + len(sessions[55:]) - 1 and k == int(cf._dates.searchsorted(sessions[-1]))


def test_onnx_served_window_model_on_the_hot_path(setup):
    s, market, feats, labels, reg, v2 = setup
    reg.export_onnx("lstm", "champion")
    cf = ChampionForecasts(market, s.replace(models__names="lstm"), reg, features=(feats, labels))
    days = feats.index.get_level_values("timestamp").unique()
    sessions = days[(days >= "2019-07-01") & (days <= "2019-07-12")]
    cf.prepare(SYMS, sessions)
    for ts in sessions:
        cf.begin_session(ts)
        assert isinstance(cf._loaded[("lstm", "v0001")][0], OnnxServer)
        want = reference(cf, ts)
        np.testing.assert_array_equal(cf.forecasts["prediction"].to_numpy(), want["prediction"].to_numpy(), err_msg=str(ts))
        np.testing.assert_array_equal(cf.forecasts["confidence"].to_numpy(), want["confidence"].to_numpy())
