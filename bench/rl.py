"""Reinforcement-learning benchmarks (printed, not timed tests).

1. Environment steps per second on one core (run it under `taskset -c 0`) for 20 and 500 symbols and both engines
   (`rl.engine`: compiled = trading.fast.step_kernel, python = Engine objects): random continuous actions (a full
   rebalance through the engine every step: sizing, pre-trade risk, fills, marks) and a steady policy (the same action
   every step: few orders); for the Python engine the time split between the engine (`decide` + `on_bar`), the
   observation and the rest of the step. Target: >= 20,000 steps/s for 20 symbols.
2. Training wall time per fold for each agent (PPO, A2C, SAC, DQN) on CPU, `--timesteps` environment steps on the
   first walk-forward fold of the embedded data (20 symbols).
3. With `--walk-forward`: the out-of-sample figures of the agents and their ensemble over the walk-forward test
   windows from `--test-start` (trained per fold on its training rows only, selected on validation only), next to 1/N.
Run: taskset -c 0 .venv/bin/python bench/rl.py [--steps 3000] [--fast-steps 30000] [--timesteps 5000] [--engine python] [--walk-forward --test-start 2018-01-01]
"""
import argparse
import time
import warnings

import numpy as np
import pandas as pd
import torch

warnings.filterwarnings("ignore")
from trading_lib.config import load_settings
from trading_lib.data.sources import EmbeddedSource, to_panel
from trading_lib.rl.agents import ALGORITHMS, train_agent, walk_forward_agents
from trading_lib.rl.env import PortfolioEnv
from trading_lib.trading.engine import Engine

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=3000); ap.add_argument("--fast-steps", type=int, default=30000); ap.add_argument("--timesteps", type=int, default=5000)
ap.add_argument("--agents", default=",".join(ALGORITHMS)); ap.add_argument("--walk-forward", action="store_true")
ap.add_argument("--test-start", default="2018-01-01"); ap.add_argument("--skip-train", action="store_true")
ap.add_argument("--device", default="cpu"); ap.add_argument("--skip-env", action="store_true")
ap.add_argument("--engine", default=None, help="rl.engine for training (2, 3): compiled | python (default: settings)")
args = ap.parse_args()
torch.set_num_threads(1)
s = load_settings(environ={})
s_train = s if args.engine is None else s.replace(rl__engine=args.engine)


def synthetic(n_sym, n_days=2000, seed=0):
    rng = np.random.default_rng(seed)
    ts = pd.bdate_range("2010-01-01", periods=n_days, tz="UTC").as_unit("ns")  # as the data layer: the engine clock reads ns
    r = rng.normal(0.0003, 0.015, (n_days, n_sym))
    return pd.DataFrame(100 * np.exp(np.cumsum(r, 0)), index=ts, columns=[f"S{i:03d}" for i in range(n_sym)])


def timed_env(close, steady, engine, steps):
    """(steps/s, share of time in the engine, share in the observation) over `steps` steps (shares: Python engine only)."""
    env = PortfolioEnv(close, s.replace(risk__max_order_notional=1e12, risk__max_order_fraction=None, risk__max_position_weight=1.0),
                       episode_length=len(close) - 2, engine=engine)
    env.reset(seed=0); env.step(env.action_space.sample())  # the compiled step loads from Numba's cache once
    acc = dict(engine=0.0, obs=0.0)
    dec, bar, obs = Engine.decide, Engine.on_bar, PortfolioEnv._observe
    def wrap(f, key):
        def g(*a, **k):
            t = time.perf_counter(); out = f(*a, **k); acc[key] += time.perf_counter() - t; return out
        return g
    Engine.decide, Engine.on_bar, PortfolioEnv._observe = wrap(dec, "engine"), wrap(bar, "engine"), wrap(obs, "obs")
    try:
        env.reset(seed=0); rng = np.random.default_rng(0); n = close.shape[1] + 1
        acts = np.repeat(rng.uniform(-1, 1, (1, n)), steps, 0) if steady else rng.uniform(-1, 1, (steps, n))
        acts = acts.astype(np.float32); t0 = time.perf_counter()
        for a in acts:
            _, _, term, trunc, _ = env.step(a)
            if term or trunc: env.reset()
        wall = time.perf_counter() - t0
    finally:
        Engine.decide, Engine.on_bar, PortfolioEnv._observe = dec, bar, obs
    return steps / wall, acc["engine"] / wall, acc["obs"] / wall


print("1. environment steps/s on one core (continuous env, through the engine)")
for n in ((20, 500) if not args.skip_env else ()):
    for engine, steps in (("python", args.steps), ("compiled", args.fast_steps)):
        close = synthetic(n, max(steps + 50, 500))
        for steady in (False, True):
            sps, eng, ob = timed_env(close, steady, engine, steps)
            split = f"(engine {eng:4.0%}, observation {ob:4.0%}, rest {1 - eng - ob:4.0%})" if engine == "python" else "(one compiled call per step)"
            print(f"  {n:4d} symbols, {engine:8s} engine, {'steady action ' if steady else 'random actions'}: {sps:8.0f} steps/s {split}")

close = to_panel(EmbeddedSource().bars(None, "2005-01-01", "2019-12-31"))
from trading_lib.research.backtest import walk_forward_folds  # bench only: rl does not import research

folds = walk_forward_folds(close.index, s.replace(walk_forward__test_start=pd.Timestamp(args.test_start).date()))
agents = args.agents.split(",")
if not args.skip_train:
    f = folds[0]
    print(f"2. training wall time per fold on {args.device}, {s_train.rl.engine} engine ({close.shape[1]} symbols, fold 0: train {f.train_start.date()}.."
          f"{f.fit_end.date()}, {args.timesteps} steps, {s.rl.n_envs} envs)")
    for a in agents:
        ag = train_agent(a, close, s_train, f.train_start, f.fit_end, seed=0, timesteps=args.timesteps, device=args.device)
        print(f"  {a:4s}: {ag.train_seconds:7.1f} s  ({args.timesteps / ag.train_seconds:6.0f} steps/s incl. updates)")

if args.walk_forward:
    print(f"3. walk-forward out of sample: {len(folds)} folds from {folds[0].test_start.date()} to {folds[-1].test_end.date()}, "
          f"{args.timesteps} steps per agent per fold, seeds {s.rl.seeds}, ensemble rule {s.rl.ensemble!r}")
    t0 = time.perf_counter()
    wf = walk_forward_agents(close, folds, s_train, algorithms=agents, timesteps=args.timesteps, progress=True)
    cols = ["cagr", "sharpe", "max_drawdown", "ann_vol", "turnover"]
    perf = pd.DataFrame(wf.performance).T
    print(perf[[c for c in cols if c in perf.columns] + ["n_orders"]].to_string(float_format=lambda x: f"{x:8.3f}"))
    print(wf.runs[["fold", "agent", "validation_sharpe", "ensemble_weight", "train_seconds"]].to_string(index=False,
          float_format=lambda x: f"{x:7.3f}"))
    print(f"  refused orders: { {k: v['refused_orders'] for k, v in wf.performance.items()} }")
    print(f"  trials (deflated Sharpe): {wf.n_trials}; total {time.perf_counter() - t0:.0f} s")
