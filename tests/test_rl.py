"""Reinforcement learning over the one engine (trading_lib.rl): the environments pass gymnasium's and
Stable-Baselines3's checks, seeded episodes repeat exactly, no observation sees a bar after its session, a saved agent
loads and acts the same, an agent as a strategy trades the same in the live replay as in the backtest, and a DQN agent
learns the optimal policy of a toy market."""
import warnings

import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from test_parity import END, START, SYMS, assert_same, backtest, market, replay, settings_for  # noqa: F401  (market: fixture)

from trading_lib.config import load_settings
from trading_lib.data.sources import EmbeddedSource, to_panel
from trading_lib.models.registry import ModelRegistry
from trading_lib.rl.agents import load_agent, save_agent, train_agent
from trading_lib.rl.env import Cash, ConstantWeights, make_env
from trading_lib.trading.engine import run_backtest

KINDS = ["continuous", "discrete"]


@pytest.fixture(scope="module")
def close():
    return to_panel(EmbeddedSource().bars(["AAPL", "JPM", "KO", "XOM", "PFE"], "2017-01-01", "2019-12-31"))


@pytest.fixture(scope="module")
def settings():
    return load_settings(environ={}).replace(rl__episode_length=60)


@pytest.mark.parametrize("kind", KINDS)
def test_env_passes_gymnasium_and_sb3_checks(close, settings, kind):
    env = make_env(kind, close, settings, "2017-03-01", "2018-12-31")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_episodes_are_deterministic(close, settings, kind):
    def episode(seed):
        env = make_env(kind, close, settings, "2017-03-01", "2018-12-31")
        env.action_space.seed(seed)
        obs, info = env.reset(seed=seed); out, done = [(info["timestamp"], obs.tobytes())], False
        while not done:
            obs, r, term, trunc, info = env.step(env.action_space.sample())
            out.append((info["timestamp"], obs.tobytes(), r, info["equity"], tuple(sorted(info["refused"].items()))))
            done = term or trunc
        return out
    a, b, c = episode(3), episode(3), episode(4)
    assert len(a) == 61 and a == b
    assert a[0][0] != c[0][0] or a != c   # another seed: another period or other actions


@pytest.mark.parametrize("kind", KINDS)
def test_observation_does_not_see_later_bars(close, settings, kind):
    cut = close.index.searchsorted(pd.Timestamp("2018-06-29", tz="UTC"))
    alt = close.copy()
    alt.iloc[cut + 1:] *= 3 * (1 + 0.2 * np.random.default_rng(0).random(alt.iloc[cut + 1:].shape))
    envs = [make_env(kind, c, settings, "2018-03-01", random_start=False, episode_length=200) for c in (close, alt)]
    o = [e.reset(seed=0)[0] for e in envs]
    act = np.zeros(6, np.float32) if kind == "continuous" else 1
    n = 0
    while envs[0].t < cut:
        o = [e.step(act)[0] for e in envs]
        assert np.array_equal(o[0], o[1]), envs[0].stamps[envs[0].t]
        n += 1
    assert n > 60
    o = [e.step(act)[0] for e in envs]
    assert not np.array_equal(o[0], o[1])   # the perturbation shows from the next session on


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_saved_agent_loads_and_acts_the_same(tmp_path, close, settings, algo):
    agent = train_agent(algo, close, settings, "2017-03-01", "2018-12-31", seed=1, timesteps=300, n_envs=2)
    reg = ModelRegistry(tmp_path / "models")
    v = save_agent(agent, reg, settings, metrics={"validation_sharpe": 0.1})
    back = load_agent(reg, f"rl-{algo}", v, settings)
    meta = reg.info(f"rl-{algo}", v)
    assert meta["config"]["kind"] == ("discrete" if algo == "dqn" else "continuous")
    assert meta["feature_schema"]["features"][:2] == ["logret[t-19]:AAPL", "logret[t-19]:JPM"]
    b1 = run_backtest(close, agent, settings, start="2019-01-02", end="2019-06-28")
    b2 = run_backtest(close, back, settings, start="2019-01-02", end="2019-06-28")
    assert b1.n_orders > 0
    pd.testing.assert_frame_equal(b1.targets, b2.targets)
    pd.testing.assert_series_equal(b1.equity, b2.equity)
    # the raw actions too, on every observation of a replayed episode
    env = make_env(agent.kind, close, settings, "2019-01-02", random_start=False, episode_length=100)
    obs, _ = env.reset(seed=0)
    for _ in range(100):
        a1 = agent.model.predict(obs, deterministic=True)[0]
        assert np.array_equal(a1, back.model.predict(obs, deterministic=True)[0])
        obs, *_ = env.step(a1)
    (reg.root / f"rl-{algo}" / v / "model.pt").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="SHA-256"):
        load_agent(reg, f"rl-{algo}", v, settings)


def test_agent_strategy_replay_equals_backtest(tmp_path, market):  # noqa: F811
    md, _, close = market
    s = settings_for(tmp_path)
    agent = train_agent("ppo", close, s, "2018-03-01", "2019-03-29", seed=0, timesteps=256, n_envs=2)
    hist, ro, rf = replay(tmp_path, s, md, agent, "parity-rl-ppo")
    bt, bo = backtest(s, close, agent)
    assert_same(hist, ro, rf, bt, bo)


def test_dqn_learns_the_toy_market():
    """UP rises 0.4 %/day, DOWN falls 0.4 %/day: the optimal policy holds UP only. DQN chooses among cash, UP, DOWN and
    half-half; after 1,500 steps on the first 200 sessions it holds UP only on the 100 sessions after them."""
    idx = pd.bdate_range("2020-01-01", periods=300, tz="UTC")
    close = pd.DataFrame({"UP": 100 * 1.004 ** np.arange(300), "DOWN": 100 * 0.996 ** np.arange(300)}, index=idx)
    s = load_settings(environ={}).replace(risk__max_position_weight=1.0, risk__max_order_notional=1e9, risk__max_order_fraction=1.0,
                                          rl__episode_length=50, rl__window=5)
    cands = lambda: {"cash": Cash(), "up": ConstantWeights([1.0, 0.0], "up"), "down": ConstantWeights([0.0, 1.0], "down"),
                     "half": ConstantWeights([0.5, 0.5], "half")}
    agent = train_agent("dqn", close, s, end=idx[199], seed=0, timesteps=1500, n_envs=2, candidates_fn=cands,
                        hyperparameters=dict(learning_starts=100, exploration_fraction=0.5, target_update_interval=100))
    bt = run_backtest(close, agent, s, start=idx[200])
    assert (bt.targets.to_numpy() == [1.0, 0.0]).all()
    np.testing.assert_allclose(bt.weights["UP"].iloc[1:], 1.0, atol=0.01)
    assert bt.equity.iloc[-1] / bt.equity.iloc[0] > 1.004 ** 90
