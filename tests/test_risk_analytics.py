"""Portfolio optimisation and risk analytics against reference implementations (skfolio, arch, scipy closed forms),
no look-ahead, and a weekly HRP backtest through the engine (its 18-year timing: bench/risk.py)."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from trading_lib.analytics import risk_analytics as RA
from trading_lib.config import load_settings
from trading_lib.data.sources import EmbeddedSource
from trading_lib.portfolio import optimisation as O
from trading_lib.trading.engine import run_backtest
from trading_lib.trading.strategy import ScoreStrategy


@pytest.fixture(scope="module")
def close():
    return EmbeddedSource().bars(None, "1990-04-11").close.unstack("symbol")  # the full history is refused (RRC 1990-04-10: a 1/3 split ratio)


@pytest.fixture(scope="module")
def spx():
    return EmbeddedSource().series("SP500")


def test_hrp_matches_skfolio_direct(close):
    from skfolio.moments import LedoitWolf
    from skfolio.optimization import HierarchicalRiskParity
    from skfolio.prior import EmpiricalPrior
    dates = close.index[[3000, 5000, 7000]]
    W = O.optimised_weights(close, "hrp", dates, cov_window=252)
    R = close.pct_change(fill_method=None)
    for d in dates:
        X = R.loc[:d].iloc[-252:]
        assert X.notna().all().all() and X.index[-1] == d  # window ends at the decision close
        ref = HierarchicalRiskParity(prior_estimator=EmpiricalPrior(covariance_estimator=LedoitWolf())).fit(X.to_numpy()).weights_
        np.testing.assert_allclose(W.loc[d].to_numpy(), ref, atol=1e-12)


def test_hrp_weekly_backtest_through_the_engine(close):
    "Three years of weekly HRP decisions through the engine (history before the start feeds the covariance); the 18-year timing is in bench/risk.py."
    S = load_settings(environ={}).replace(portfolio__method="hrp")
    C = close.loc["2020":"2022"]
    scores = pd.DataFrame(0.0, index=C.index, columns=C.columns)
    bt = run_backtest(close, ScoreStrategy(scores, S), S, start=C.index[0], end=C.index[-1])
    dec = bt.targets.notna().all(axis=1)
    assert 150 <= dec.sum() <= 160 and bt.n_fills > 0  # one decision a week
    W = bt.targets[dec]
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-9)
    assert (W.to_numpy() >= -1e-12).all() and W.to_numpy().max() <= S.portfolio.max_weight + 1e-9


@pytest.mark.parametrize("method,vol", [("mean_variance", False), ("hrp", True), ("topk", True)])
def test_no_lookahead_weights(close, method, vol):
    """Prices changed after decision date d leave every weight decided at or before d unchanged."""
    C = close.loc["2015":"2017"]
    S = load_settings(environ={}).replace(portfolio__method=method, portfolio__vol_target_enabled=vol,
                                          portfolio__vol_window=250, portfolio__turnover_penalty=1e-4)
    sess = C.index[C.index >= "2016-06-01"]
    rng = np.random.default_rng(0)
    scores = pd.DataFrame(rng.normal(size=(len(sess), C.shape[1])), index=sess, columns=C.columns)
    mu = scores * 1e-3
    d = sess[60]
    C2 = C.copy(); after = C2.index > d
    C2.loc[after] = C2.loc[after] * rng.uniform(0.5, 1.5, C2.loc[after].shape)
    W1 = run_backtest(C, ScoreStrategy(scores, S, expected_returns=mu), S).targets
    W2 = run_backtest(C2, ScoreStrategy(scores, S, expected_returns=mu), S).targets
    pd.testing.assert_frame_equal(W1.loc[:d], W2.loc[:d])
    later = W1.loc[d:].iloc[1:].dropna()
    assert len(later) and not np.allclose(later, W2.loc[later.index])


def test_rolling_garch_matches_arch_and_is_causal(spx):
    from arch import arch_model
    r = spx.pct_change().dropna().loc["2005":"2011"]
    for model, o in (("garch", 0), ("gjr", 1)):
        g = RA.rolling_garch(r, window=500, refit_every=100, model=model)
        for k in (500, 700):  # the first forecast of each block = arch's own fit + forecast on the window before it
            res = arch_model(100 * r.iloc[k - 500:k], p=1, o=o, q=1, rescale=False).fit(disp="off")
            ref = np.sqrt(res.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]) / 100
            assert abs(g["sigma"].iloc[k] - ref) < 1e-9 * ref
        r2 = r.copy(); r2.iloc[900:] = -r2.iloc[900:] * 2
        g2 = RA.rolling_garch(r2, window=500, refit_every=100, model=model)
        np.testing.assert_array_equal(g["sigma"].iloc[:901].to_numpy(), g2["sigma"].iloc[:901].to_numpy())


def test_var_closed_forms():
    mu, sd = -0.0002, 0.015
    for a in (0.95, 0.99):
        z = stats.norm.ppf(1 - a)
        v, c = RA.var_normal(level=a, mu=mu, sigma=sd)
        assert v == pytest.approx(-(mu + sd * z), rel=1e-12)
        # CVaR of a normal: −μ + σ φ(z)/(1−a), checked against numerical integration of the tail
        tail = stats.norm.expect(lambda x: x, loc=mu, scale=sd, ub=mu + sd * z, conditional=True)
        assert c == pytest.approx(-tail, rel=1e-8)
        nu, m, s = 5.0, 0.0, 0.01
        tv, tc = RA._t_var(a, nu, m, s)
        assert tv == pytest.approx(-stats.t.ppf(1 - a, nu, m, s), rel=1e-12)
        assert tc == pytest.approx(-stats.t.expect(lambda x: x, args=(nu,), loc=m, scale=s, ub=-tv, conditional=True), rel=1e-7)
    x = np.random.default_rng(5).normal(mu, sd, 1_000_000)
    hv, hc = RA.var_historical(x, 0.99)
    v, c = RA.var_normal(level=0.99, mu=mu, sigma=sd)
    assert hv == pytest.approx(v, rel=0.01) and hc == pytest.approx(c, rel=0.01)


def test_kupiec_christoffersen_independent():
    rng = np.random.default_rng(11)
    for _ in range(5):
        I = rng.random(750) < rng.uniform(0.005, 0.05)
        n, x = len(I), int(I.sum())
        k = RA.kupiec_pof(I, 0.99)
        lr = 2 * (stats.binom.logpmf(x, n, x / n) - stats.binom.logpmf(x, n, 0.01))
        assert k["lr_pof"] == pytest.approx(lr, rel=1e-10, abs=1e-10)
        assert k["p_value_pof"] == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-9, abs=1e-12)
        c = RA.christoffersen_independence(I)
        tab = np.array([[c["n00"], c["n01"]], [c["n10"], c["n11"]]])
        assert tab.sum() == n - 1
        if (tab.sum(0) > 0).all() and (tab.sum(1) > 0).all():
            g, p, *_ = stats.chi2_contingency(tab, correction=False, lambda_="log-likelihood")
            assert c["lr_ind"] == pytest.approx(g, rel=1e-9, abs=1e-10)


def test_monte_carlo_numpy_vs_torch_cpu_same_seed():
    rng = np.random.default_rng(0); N = 50
    A = rng.normal(0, 0.01, (N, N)) / np.sqrt(N); cov = A @ A.T + np.diag(np.full(N, 1e-4))
    w = rng.dirichlet(np.ones(N)); mu = np.full(N, 2e-4)
    a = RA.monte_carlo_var(w, mu, cov, n_paths=200_000, seed=3)
    b = RA.monte_carlo_var(w, mu, cov, n_paths=200_000, seed=3, backend="torch", device="cpu")
    assert a == RA.monte_carlo_var(w, mu, cov, n_paths=200_000, seed=3)  # same seed, same back-end: identical
    ref = RA.var_normal(level=0.99, mu=w @ mu, sigma=np.sqrt(w @ cov @ w))
    for lv in (0.95, 0.99):
        assert b[lv][0] == pytest.approx(a[lv][0], rel=0.02) and b[lv][1] == pytest.approx(a[lv][1], rel=0.02)
    assert a[0.99][0] == pytest.approx(ref[0], rel=0.02)


def test_risk_report_and_stress(close, spx):
    w = pd.Series(0.0, index=close.columns); w[["AAPL", "JPM", "XOM", "KO", "PFE"]] = 0.19
    r = close.pct_change(fill_method=None).loc["2010":"2021"].fillna(0.0) @ w
    rep, fig = RA.risk_report(r, w, close, spx)
    json.dumps(rep)
    assert {"var", "var_backtests", "garch", "stress_replay", "stress_shocks", "factors"} <= set(rep)
    assert set(pd.DataFrame(rep["var"]).method) == set(RA.METHODS)
    bt = rep["var_backtests"]["0.99"]
    assert set(bt) == {"historical", "normal", "student_t", "cornish_fisher", "fhs"} and all("p_value_cc" in b for b in bt.values())
    assert rep["stress_replay"]["COVID 2020-02 → 2020-04"]["return"] < 0 and rep["factors"]["etf_daily"]["n"] > 1000
    assert fig is not None
