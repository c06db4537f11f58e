"""Issue 14: the live job serves the registry's champion and switches to a newly promoted one at the next session,
never inside a session; every forecast record in the audit ledger names the model version that made it. A real
embedded Redis, the ledger and the journalled simulated broker, as in the other replay tests."""

import pandas as pd

from trading_lib.config import load_settings
from trading_lib.data.sources import load_market
from trading_lib.execution.brokers import SimulatedBroker
from trading_lib.execution.simulated import CostModel
from trading_lib.features import build_dataset
from trading_lib.live.approvals import ApprovalQueue
from trading_lib.live.audit import Ledger, verify
from trading_lib.live.state import LiveState, close_redis, connect_redis
from trading_lib.live.trader import ChampionForecasts, LiveTrader
from trading_lib.models.base import LightGBMForecaster
from trading_lib.models.registry import ModelRegistry

SYMS = ["AAPL", "JPM", "KO", "XOM", "PFE", "MSFT"]
START, END, SWITCH = "2019-06-03", "2019-06-14", "2019-06-07"  # two weeks of daily decisions; promotion during 06-07


class PromotingBroker(SimulatedBroker):
    "The simulated broker; at the bar of `at` (mid-session: after the session opened, before its decision) it promotes."
    def on_bar(self, ts, prices):
        if pd.Timestamp(ts) == pd.Timestamp(self.promote_at, tz="UTC"): self.promotions.append(self.do_promote())
        return super().on_bar(ts, prices)


def test_replay_switches_to_the_new_champion_at_the_next_session(tmp_path):
    s = load_settings(environ={}).replace(universe__symbols=",".join(SYMS), data__start="2012-01-01", data__end=END,
                                          models__names="lightgbm", portfolio__rebalance="D", portfolio__top_k=3,
                                          approvals__max_notional=1e12, approvals__max_weight_change=1.0,
                                          approvals__min_confidence=0.0, redis__embedded_dir=str(tmp_path / "redis"))
    market = load_market(s)
    feats, labels = build_dataset(market, s)
    t = feats.index.get_level_values("timestamp")
    cols = [c for c in feats.columns if c not in ("vix", "vix_chg_20")]
    fit = lambda end, c: LightGBMForecaster(horizons=s.models.horizons, n_estimators=20, seed=1).fit(
        feats.loc[t <= end, c], labels.loc[t <= end])
    reg = ModelRegistry(tmp_path / "registry")
    v1 = reg.register(fit("2016-12-30", cols), "lightgbm", training_window=("2012-01-03", "2016-12-30"))
    v2 = reg.register(fit("2018-06-29", cols[:-2]), "lightgbm", training_window=("2012-01-03", "2018-06-29"), champion=None)
    assert (v1, v2) == ("v0001", "v0002") and reg.resolve("lightgbm", "champion") == v1

    r = connect_redis(s, appendfsync="everysec")
    led = Ledger(tmp_path / "ledger.sqlite")
    st = LiveState(r, ledger=led); st.release_kill_switch("test-supervisor", "test start")
    q = ApprovalQueue(r, led, s.approvals.expiry_seconds)
    b = PromotingBroker.open(tmp_path / "broker.json", CostModel.from_settings(s.costs), s.execution.initial_cash)
    b.promote_at, b.promotions = SWITCH, []
    b.do_promote = lambda: reg.promote("lightgbm", v2)  # the retrain job's promotion, while the replay runs
    strat = ChampionForecasts(market, s, reg, features=(feats, labels))
    try:
        tr = LiveTrader(s, "champ", market, None, b, st, q, led, circuit_breakers=False, strategy=strat)
        hist = tr.run(start=START, end=END)
    finally:
        close_redis(r, shutdown=True)
    assert b.promotions == [v2] and reg.resolve("lightgbm", "champion") == v2
    recs = [x.payload for x in led.records("forecast")]
    got = {pd.Timestamp(p["session"]).strftime("%Y-%m-%d"): p["model_versions"] for p in recs}
    days = [d.strftime("%Y-%m-%d") for d in hist.index]
    assert days[0] == START and days[-1] == END and len(days) == 10
    assert list(got) == days  # a decision, so a forecast record, every session
    assert {d: v["lightgbm"] for d, v in got.items()} == {d: (v1 if d <= SWITCH else v2) for d in days}
    assert all(p["models"] == ["lightgbm"] and p["rows"] == len(SYMS) for p in recs)
    # the new champion forecast from its own (smaller) feature schema
    assert strat._loaded[("lightgbm", v2)][1] == cols[:-2] and strat._loaded[("lightgbm", v1)][1] == cols
    assert len(b.fills) > 0 and verify(led.path).ok
    led.close()
