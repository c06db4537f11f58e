"""Model zoo, registry and serving (CPU, small sizes): shapes and no NaN, save→load identity, ONNX parity,
registry schema mismatch, checkpoint rotation, ensemble isolation from test-period labels."""
import numpy as np
import pandas as pd
import pytest
import torch

from trading_lib.models.base import Forecaster, LightGBMForecaster
from trading_lib.models.factory import make_forecaster
from trading_lib.models.registry import ModelRegistry, OnnxServer, SchemaMismatchError, data_hash, export_onnx
from trading_lib.models.zoo import (
    CNNLSTMForecaster,
    EnsembleForecaster,
    GATForecaster,
    GRUForecaster,
    TFTForecaster,
    TransformerForecaster,
    TunedForecaster,
    XGBoostForecaster,
)

HS = [1, 5, 20, 60]


@pytest.fixture(scope="module")
def panel():
    rng = np.random.default_rng(0)
    ts = pd.date_range("2022-01-03", periods=140, freq="B", tz="UTC").as_unit("ns")
    idx = pd.MultiIndex.from_product([ts, [f"S{i}" for i in range(5)]], names=["timestamp", "symbol"])
    x = rng.normal(size=(len(idx), 4))
    feats = pd.DataFrame(x, index=idx, columns=[f"f{i}" for i in range(4)])
    labs = pd.DataFrame({f"fwd_ret_{h}": 0.01 * np.sqrt(h) * (x[:, 0] + rng.normal(size=len(idx))) for h in HS}, index=idx)
    t = idx.get_level_values("timestamp")
    for h in HS: labs.loc[t > ts[-1 - h], f"fwd_ret_{h}"] = np.nan
    tr, va, te = t < ts[80], (t >= ts[80]) & (t < ts[110]), t >= ts[110]
    return feats, labs, ts, tr, va, te


WIN = dict(lookback=5, hidden=8, epochs=2, batch_size=64, lr=1e-2, device="cpu", seed=0, progress=False)
MODELS = {
    "gru": lambda: GRUForecaster(**WIN),
    "cnn_lstm": lambda: CNNLSTMForecaster(**WIN),
    "transformer": lambda: TransformerForecaster(**WIN),
    "tft": lambda: TFTForecaster(**WIN),
    "gat": lambda: GATForecaster(hidden=8, neighbours=2, epochs=2, batch_size=16, device="cpu", seed=0, progress=False),
    "xgboost": lambda: XGBoostForecaster(n_estimators=20, seed=0),
    "ensemble": lambda: EnsembleForecaster(members=[LightGBMForecaster(n_estimators=20), GRUForecaster(**WIN)]),
    "tuned": lambda: TunedForecaster(base=LightGBMForecaster(n_estimators=20), n_trials=0),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_fit_predict_shapes_and_save_load(name, panel, tmp_path):
    feats, labs, ts, tr, va, te = panel
    m = MODELS[name]().fit(feats[tr], labs[tr], feats[va], labs[va])
    fc = m.predict(feats, start=ts[110])
    assert list(fc.columns) == ["timestamp", "symbol", "horizon", "prediction", "confidence", "model"]
    assert len(fc) == te.sum() * len(HS) and fc.attrs["rows_without_forecast"] == 0
    assert not fc.isna().any().any() and fc.confidence.between(0, 1).all()
    assert fc.groupby("horizon").size().to_dict() == {h: te.sum() for h in HS}
    back = Forecaster.load(m.save(tmp_path / f"{name}.pt"))
    assert type(back) is type(m)
    pd.testing.assert_frame_equal(back.predict(feats, start=ts[110]), fc)


def test_window_models_deterministic_on_cpu(panel):
    feats, labs, ts, tr, va, te = panel
    a = CNNLSTMForecaster(**WIN).fit(feats[tr], labs[tr], feats[va], labs[va]).predict(feats, start=ts[110])
    b = CNNLSTMForecaster(**WIN).fit(feats[tr], labs[tr], feats[va], labs[va]).predict(feats, start=ts[110])
    pd.testing.assert_frame_equal(a, b)


def test_checkpoint_rotation_keeps_best_3(panel, tmp_path):
    feats, labs, ts, tr, va, te = panel
    m = GRUForecaster(**{**WIN, "epochs": 6, "patience": 99, "checkpoint_dir": str(tmp_path / "ck")})
    m.fit(feats[tr], labs[tr], feats[va], labs[va])
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    best3 = pd.DataFrame(m.history_).nsmallest(3, "valid_loss").epoch
    assert len(m.history_) == 6 and files == sorted(f"gru-epoch{e:04d}.pt" for e in best3)
    assert m.checkpoints_[0].name == f"gru-epoch{m.best_epoch_:04d}.pt"
    best = torch.load(m.checkpoints_[0], weights_only=True)["state"]
    assert all(torch.equal(best[k], v) for k, v in m.net_.state_dict().items())


def test_ensemble_never_sees_test_labels(panel):
    """Weights come from the validation slice: test-period labels (present in the frame passed) are never read."""
    feats, labs, ts, tr, va, te = panel
    fits = []
    for seed in (1, 2):
        lab = labs.copy(); lab.loc[te] = np.random.default_rng(seed).normal(size=(te.sum(), len(HS)))
        e = EnsembleForecaster(members=[LightGBMForecaster(n_estimators=20), XGBoostForecaster(n_estimators=20)])
        fits.append(e.fit(feats[tr], lab, feats[va], lab))
    assert fits[0].weights_ == fits[1].weights_
    assert fits[0].weight_window_ == (ts[80], ts[109]) and fits[0].weight_window_[1] < ts[110]
    pd.testing.assert_frame_equal(fits[0].predict(feats[te]), fits[1].predict(feats[te]))


def test_onnx_parity_and_registry(panel, tmp_path):
    feats, labs, ts, tr, va, te = panel
    reg = ModelRegistry(tmp_path / "reg")
    for m in (TransformerForecaster(**WIN), TFTForecaster(**WIN)):
        m.fit(feats[tr], labs[tr], feats[va], labs[va])
        v = reg.register(m, training_window=(ts[0], ts[109]), data_hash=data_hash(feats[tr | va], labs[tr | va]))
        reg.export_onnx(m.name, v)
        srv = reg.serve(m.name, "champion", features=feats, prefer="cpu")
        assert isinstance(srv, OnnxServer) and srv.provider_ == "CPUExecutionProvider"
        _, xb = m.window_batch(feats[te])
        with torch.no_grad(): ref = m.net_(torch.from_numpy(xb)).numpy()
        assert np.abs(srv.run(xb) - ref).max() < 1e-4
        a, b = srv.predict(feats, start=ts[110]), m.predict(feats, start=ts[110])
        assert np.abs(a.prediction - b.prediction).max() < 1e-4 and np.abs(a.confidence - b.confidence).max() < 1e-4
    with pytest.raises(SchemaMismatchError, match=r"missing \['f1'\]"):
        reg.load("tft", "champion", features=feats.drop(columns="f1"))
    with pytest.raises(TypeError, match="not XGBoostForecaster"):
        export_onnx(XGBoostForecaster(n_estimators=5).fit(feats[tr], labs[tr]), tmp_path / "x.onnx")


def test_factory_builds_every_zoo_model():
    from trading_lib.config import ModelSettings
    ms = ModelSettings(device="cpu", zoo_hidden=8)
    for n in ("gru", "cnn_lstm", "transformer", "tft", "gat", "xgboost", "ensemble"):
        f = make_forecaster(n, ms)
        assert f.name == n and f.horizons == HS
    assert isinstance(make_forecaster("lstm", ms.model_copy(update={"hpo_trials": 3})), TunedForecaster)
