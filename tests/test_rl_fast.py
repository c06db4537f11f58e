"""The compiled environment (`rl.engine = compiled`: one `trading.fast.step_kernel` call per step) against the Python
engine's (`Engine` objects, the reference): for random action sequences on random panels with missing and bad prices,
crashes, refusals of several kinds and the daily-loss / drawdown breakers (REDUCING and HALTED reached), the same
observations, rewards, infos and terminations, to 1e-9 (bit for bit in practice); both pass the environment checks."""
import warnings
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from trading_lib.config import load_settings
from trading_lib.rl.env import Cash, ConstantWeights, Momentum, make_env
from trading_lib.trading.strategy import EqualWeight

BASE = load_settings(environ={})
SEEDS = range(14)


def case(seed):
    "A random panel (with opens or not), settings and the discrete candidates of one seed (NumPy's PCG64 only)."
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    T, N = int(rng.integers(60, 120)), int(rng.integers(2, 8))
    r = rng.normal(0.0, pick([0.01, 0.03]), (T, N))
    r[rng.integers(5, T - 5, 2)] -= 0.12  # two crashes: the daily-loss breaker, then maybe the drawdown one
    C = 100 * np.exp(np.cumsum(r, 0))
    C[rng.random((T, N)) < 0.04] = np.nan
    C[rng.random((T, N)) < 0.01] = pick([0.0, -1.0])
    # nanoseconds, as the data layer gives: the engine clock is asi8 / 1e9 (pandas 3 builds date ranges in microseconds)
    ix = pd.bdate_range("2021-01-04", periods=T, tz="UTC", name="timestamp").as_unit("ns")
    close = pd.DataFrame(C, ix, [f"S{i}" for i in range(N)])
    opn = None
    if rng.random() < 0.5:
        opn = close * np.exp(rng.normal(0, 0.005, close.shape)); opn[rng.random(close.shape) < 0.1] = np.nan
    s = BASE.replace(
        rl__episode_length=int(rng.integers(10, 50)), rl__window=int(rng.integers(1, 6)),
        rl__return_scale=pick([50.0, 400.0]), rl__obs_clip=pick([10.0, 0.5]),  # 0.5: the clip bites
        rl__turnover_penalty=pick([0.0, 0.01]), rl__drawdown_penalty=pick([0.0, 0.5]),
        rl__circuit_breakers=pick([True, True, False]),
        risk__daily_loss_limit_pct=pick([0.02, 0.05]), risk__max_drawdown_pct=pick([0.06, 0.25]),
        risk__breach_action=pick(["halt", "reduce"]),
        risk__max_order_fraction=pick([None, 0.2, 0.35]), risk__max_position_weight=pick([0.3, 0.5, 1.0]),
        risk__max_gross_exposure=pick([1.05, 0.7]), risk__duplicate_window_seconds=pick([60.0, 864_000.0]),
        risk__max_orders_per_minute=pick([600, 3]), risk__max_price_age_seconds=pick([172_800.0, 100_000.0]),
        costs__slippage_bps=pick([0.0, 5.0]), costs__commission_bps=pick([0.0, 1.0]),
        execution__min_order_notional=pick([0.0, 5_000.0]))
    w = rng.dirichlet(np.ones(N))
    cands = lambda: {"cash": Cash(), "1/N": EqualWeight("D"), "momentum": Momentum(2, 0.5, lookback=30),  # noqa: E731
                     "all-in": ConstantWeights(np.eye(N)[0]), "mix": ConstantWeights(w, "mix")}
    return rng, close, opn, s, cands


def rollout(env, seed, actions):
    obs, info = env.reset(seed=seed); out = [("reset", obs, info)]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append(("step", obs, r, term, trunc, info))
        if term or trunc:
            obs, info = env.reset(); out.append(("reset", obs, info))
    return out


def assert_same(a, b):
    "Two rollouts equal: observations, rewards, equity, turnover and weights to 1e-9; the rest exactly."
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x[0] == y[0]
        np.testing.assert_allclose(x[1], y[1], rtol=0, atol=1e-9)
        assert x[1].dtype == y[1].dtype == np.float32
        if x[0] == "step":
            assert abs(x[2] - y[2]) <= 1e-9 and x[3:5] == y[3:5]
        ix, iy = x[-1], y[-1]
        assert ix.keys() == iy.keys()
        assert ix["timestamp"] == iy["timestamp"] and ix["state"] == iy["state"]
        np.testing.assert_allclose(ix["equity"], iy["equity"], rtol=1e-12, atol=1e-9)
        if x[0] == "step":
            assert ix["refused"] == iy["refused"] and ix["n_refused"] == iy["n_refused"]
            np.testing.assert_allclose(ix["turnover"], iy["turnover"], rtol=0, atol=1e-9)
            assert (ix["weights"] is None) == (iy["weights"] is None)
            if ix["weights"] is not None: np.testing.assert_allclose(ix["weights"], iy["weights"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_compiled_env_equals_python_env(kind):
    states, refused, n_steps, n_all, exact = Counter(), Counter(), 0, 0, 0
    for seed in SEEDS:
        rng, close, opn, s, cands = case(seed)
        envs = [make_env(kind, close, s, open=opn, engine=e, candidates=cands() if kind == "discrete" else None)
                for e in ("python", "compiled")]
        n = close.shape[1] + 1
        if kind == "continuous":  # uniform, corners (a_i = ±1 exactly) and out-of-bounds actions
            acts = rng.uniform(-1.3, 1.3, (150, n)).astype(np.float32)
            acts[rng.random(acts.shape) < 0.3] = -1.0; acts[rng.random(acts.shape) < 0.05] = 1.0
            acts[::17] = -1.0  # all cash: the weights are zero
        else:
            acts = rng.integers(0, 5, 150)
        ref, fast = (rollout(e, seed, acts) for e in envs)
        assert_same(ref, fast)
        for x, y in zip(ref, fast):
            states[x[-1]["state"]] += 1; n_steps += x[0] == "step"; n_all += 1
            exact += np.array_equal(x[1], y[1]) and (x[0] == "reset" or (x[2] == y[2] and x[-1]["equity"] == y[-1]["equity"]))
            if x[0] == "step": refused.update(x[-1]["refused"])
    # the cases reach what they are meant to: both breaker states, and refusals of several kinds
    assert states["REDUCING"] > 0 and states["HALTED"] > 0, states
    want = {"HALTED", "REDUCING_ONLY", "MAX_POSITION_WEIGHT", "GROSS_EXPOSURE", "RATE_LIMIT", "STALE_PRICE"} | ({"MAX_ORDER_NOTIONAL"} if kind == "continuous" else set())
    assert want <= set(refused), refused
    assert n_steps == len(SEEDS) * 150 and exact == n_all  # bit for bit, in fact


@pytest.mark.parametrize("engine", ["compiled", "python"])
@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_both_engines_pass_env_checks(kind, engine):
    _, close, opn, s, cands = case(1)
    env = make_env(kind, close, s, open=opn, engine=engine, candidates=cands() if kind == "discrete" else None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)


def test_compiled_env_errors_as_python():
    _, close, _, s, _ = case(2)
    for e in ("compiled", "python"):
        env = make_env("continuous", close, s, engine=e)
        with pytest.raises(RuntimeError, match="before reset"): env.step(np.zeros(close.shape[1] + 1, np.float32))
        env.reset(seed=0)
        with pytest.raises(ValueError, match="expected"): env.step(np.zeros(close.shape[1], np.float32))
    with pytest.raises(ValueError, match="unknown engine 'numba'"): make_env("continuous", close, s, engine="numba")
    assert make_env("continuous", close, s).engine_kind == s.rl.engine == "compiled"
