"""The compiled backtest core (`trading.fast`) against the Python engine, the reference: on random panels with NaN and
non-positive prices, halts, every kind of refusal and breaker trips, the same orders, fills, refusals, state changes
and equity (to 1e-9; in practice bit for bit). And `CompiledPreTradeRisk` against `PreTradeRisk` on random batches."""
import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from trading_lib.config import load_settings
from trading_lib.trading.engine import run_backtest
from trading_lib.trading.fast import CompiledPreTradeRisk, run_backtest_fast
from trading_lib.trading.risk import PreTradeRisk, TradingState

H = hsettings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
BASE = load_settings(environ={})


def panel(rng, T, N, freq, flat, p_nan, p_bad, halt):
    "Closes (T, N): random walks (or flat at 50 for `flat` symbols), NaN / zero / negative prices, one halted stretch."
    C = 100 * np.exp(np.cumsum(rng.normal(0, 0.04, (T, N)), 0))
    C[:, flat] = 50.0
    C[rng.random((T, N)) < p_nan] = np.nan
    bad = rng.random((T, N)) < p_bad
    C[bad] = rng.choice([0.0, -1.0, np.inf], bad.sum())
    if halt and T > 4:
        i, a = rng.integers(N), rng.integers(T - 3)
        C[a:a + rng.integers(2, 6), i] = np.nan
    ix = pd.date_range("2023-03-01 14:30", periods=T, freq=freq, tz="UTC", name="timestamp")
    return pd.DataFrame(C, ix, [f"S{i}" for i in range(N)])


def make_case(seed):
    """One random case from a seed (NumPy's PCG64 only, so the same seed gives the same case on every machine and
    Hypothesis version): closes, target weights, opens or None, settings, breakers on/off, start or None."""
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    T, N = int(rng.integers(2, 41)), int(rng.integers(1, 7))
    freq = pick(["B", "D", "6h", "1min"])  # intraday: several sessions per day (daily-loss breaker)
    flat = rng.random(N) < rng.random()
    close = panel(rng, T, N, freq, flat, 0.3 * rng.random(), 0.05 * rng.random(), bool(rng.random() < 0.5))
    opn = None
    if rng.random() < 0.5:
        opn = close * np.exp(rng.normal(0, 0.01, close.shape)); opn[rng.random(close.shape) < 0.2] = np.nan
    grid = rng.random() < 0.5  # weights from a small grid: the same order recurs (duplicate window)
    W = rng.choice([0.0, 0.2, -0.1, 0.35], (T, N)) if grid else rng.uniform(-0.3, 0.5, (T, N))
    W[rng.random(T) < 0.7 * rng.random()] = np.nan  # sessions without a decision
    W[rng.random((T, N)) < 0.05] = np.nan
    cols = list(close.columns)
    s = BASE.replace(
        costs__commission_bps=pick([0.0, 1.0, 3.0]), costs__slippage_bps=pick([0.0, 5.0]),
        execution__min_order_notional=pick([0.0, 100.0, 20_000.0]),
        risk__max_order_notional=pick([500_000.0, 150_000.0, 40_000.0]),
        risk__max_order_fraction=pick([None, None, 0.12]),
        risk__max_order_qty=pick([1_000_000.0, 2_000.0]),
        risk__max_position_weight=pick([0.30, 0.2, 0.5]),
        risk__max_gross_exposure=pick([1.05, 0.6, 2.0]),
        risk__max_net_exposure=pick([1.05, 0.4]),
        risk__max_price_age_seconds=pick([172_800.0, 3_600.0, 30.0]),
        risk__duplicate_window_seconds=pick([0.0, 60.0, 864_000.0]),
        risk__max_orders_per_minute=pick([600, 3, 1]),
        risk__restricted_symbols=[c for c in cols if rng.random() < 0.15],
        risk__daily_loss_limit_pct=pick([0.05, 0.01]),
        risk__max_drawdown_pct=pick([0.25, 0.03]),
        risk__breach_action=pick(["halt", "reduce"]))
    start = close.index[int(rng.integers(T))] if rng.random() < 0.5 else None
    return close, pd.DataFrame(W, close.index, cols), opn, s, bool(rng.random() < 0.5), start


def same(a, b):
    np.testing.assert_allclose(b.equity.to_numpy(), a.equity.to_numpy(), rtol=1e-9, atol=0)
    assert b.equity.index.equals(a.equity.index)
    np.testing.assert_allclose(b.weights.to_numpy(), a.weights.to_numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.traded_notional.to_numpy(), a.traded_notional.to_numpy(), rtol=1e-9, atol=0)
    np.testing.assert_allclose(b.commission.to_numpy(), a.commission.to_numpy(), rtol=1e-9, atol=0)
    np.testing.assert_array_equal(b.targets.to_numpy(), a.targets.to_numpy())
    assert (b.n_orders, b.n_fills) == (a.n_orders, a.n_fills)
    assert b.refusals == a.refusals
    assert len(b.orders) == len(a.orders)
    if len(a.orders):
        assert b.orders["timestamp"].tolist() == a.orders["timestamp"].tolist()
        assert b.orders["symbol"].tolist() == a.orders["symbol"].tolist()
        np.testing.assert_allclose(b.orders["qty"].to_numpy(float), a.orders["qty"].to_numpy(float), rtol=1e-9, atol=0)
    assert [(c.timestamp, c.old, c.new, c.who, c.reason) for c in b.state_changes] == \
           [(c.timestamp, c.old, c.new, c.who, c.reason) for c in a.state_changes]


def check_case(seed):
    "Both engines on `make_case(seed)`: identical; returns the refusal codes and state changes the reference produced."
    close, W, opn, s, breakers, start = make_case(seed)
    a = run_backtest(close, W, s, open=opn, circuit_breakers=breakers, start=start)
    b = run_backtest_fast(close, W, s, open=opn, circuit_breakers=breakers, start=start)
    same(a, b)
    return set(a.refusals) | {f"state:{x.new.value}" for x in a.state_changes}


@H
@given(st.integers(0, 2**63 - 1))
def test_fast_backtest_equals_engine(seed):
    check_case(seed)


def test_random_cases_cover_the_refusals():
    """The random panels reach these refusals and the HALTED breaker within the first 400 seeds (deterministic: the
    cases come from NumPy seeds, not from Hypothesis' search, so every machine checks the same ones). The constructed
    cases below add duplicates, REDUCING, REDUCING_ONLY, HALTED and NET_EXPOSURE. BAD_REFERENCE_PRICE cannot occur in a
    backtest: a symbol without a valid price gets a NaN quantity, refused first as BAD_QUANTITY."""
    need = {"BAD_QUANTITY", "RESTRICTED_SYMBOL", "STALE_PRICE", "MAX_ORDER_QTY", "MAX_ORDER_NOTIONAL",
            "MAX_POSITION_WEIGHT", "GROSS_EXPOSURE", "RATE_LIMIT", "state:HALTED"}
    seen, n = set(), 0
    while not need <= seen and n < 400:
        seen |= check_case(n); n += 1
    assert need <= seen, f"never produced in {n} seeds: {sorted(need - seen)}"
    print(f"all {len(need)} codes reached within {n} seeds")


def test_duplicate_and_reducing():
    """A flat book with no costs: the buy of day 0 recurs exactly on day 3 (refused as a duplicate within 10 days); B's
    fall on day 5 draws down 5 % > 3 %: REDUCING, where buys are refused and the sale of day 6 passes."""
    s = BASE.replace(risk__max_drawdown_pct=0.03, risk__breach_action="reduce", risk__duplicate_window_seconds=864_000.0,
                     costs__commission_bps=0.0, costs__slippage_bps=0.0)
    ix = pd.date_range("2024-01-01", periods=8, freq="D", tz="UTC", name="timestamp")
    close = pd.DataFrame({"A": 100.0, "B": [50, 50, 50, 50, 50, 40, 40, 40.0]}, ix)
    n = np.nan
    W = pd.DataFrame({"A": [.25, n, 0, .25, n, .25, 0, n], "B": [.25, n, .25, .25, n, .5, .1, n]}, ix)
    a = run_backtest(close, W, s, circuit_breakers=True)
    b = run_backtest_fast(close, W, s, circuit_breakers=True)
    same(a, b)
    assert b.refusals == {"DUPLICATE_ORDER": 1, "REDUCING_ONLY": 2}
    assert [(c.timestamp, c.new.value) for c in b.state_changes] == [(ix[5], "REDUCING")]
    assert b.orders["qty"].tolist() == [2500.0, 5000.0, -2500.0, -2625.0]
    h = run_backtest_fast(close, W, s.replace(risk__breach_action="halt"), circuit_breakers=True)
    same(run_backtest(close, W, s.replace(risk__breach_action="halt"), circuit_breakers=True), h)
    assert [(c.timestamp, c.new.value) for c in h.state_changes] == [(ix[5], "HALTED")]
    assert h.refusals == {"DUPLICATE_ORDER": 1, "HALTED": 3}  # day 5: A and B; day 6: B's sale too


@hsettings(max_examples=150, deadline=None, derandomize=True)
@given(st.integers(0, 2**31 - 1), st.integers(1, 8), st.sampled_from([0.0, 60.0, 600.0]), st.integers(1, 12),
       st.sampled_from(list(TradingState)))
def test_compiled_check_equals_pretrade_risk(seed, N, dup, opm, state):
    "Batches with repeated symbols and quantities, at repeated and advancing times: the same codes, call after call."
    rng = np.random.default_rng(seed)
    lim = BASE.risk.model_copy(update=dict(duplicate_window_seconds=dup, max_orders_per_minute=opm,
                                           max_order_notional=30_000.0, max_gross_exposure=0.8, max_net_exposure=0.5,
                                           restricted_symbols=["S0"] if rng.random() < 0.3 else [],
                                           max_order_fraction=0.05 if rng.random() < 0.3 else None))
    syms = [f"S{i}" for i in range(N)]
    ref, fast = PreTradeRisk(lim, syms), CompiledPreTradeRisk(lim, syms)
    now = 0.0
    for _ in range(6):
        now += float(rng.choice([0.0, 10.0, 59.0, 61.0, 700.0]))
        k = int(rng.integers(0, 10))
        s = rng.integers(0, N, k); q = rng.choice([-100.0, -3.0, 0.0, 3.0, 100.0, 5000.0, np.nan], k)
        px = rng.choice([np.nan, 0.0, 20.0, 80.0], N); pos = rng.choice([0.0, 50.0, -50.0], N)
        work = rng.choice([0.0, 10.0], N); pt = now - rng.choice([0.0, 1e6], N)
        eq = float(rng.choice([1e5, 1e6, -1.0, np.nan], p=[0.45, 0.45, 0.05, 0.05]))
        a = ref.check(now, s, q, px, pos, eq, open_qty=work, price_time=pt, state=state)
        b = fast.check(now, s, q, px, pos, eq, open_qty=work, price_time=pt, state=state)
        np.testing.assert_array_equal(b, a)


def test_net_exposure():
    "Net limit 40 %, gross 200 %: three 25 % longs and a 20 % short, checked in order: longs beyond the net limit are refused."
    s = BASE.replace(risk__max_net_exposure=0.4, risk__max_gross_exposure=2.0)
    ix = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC", name="timestamp")
    close = pd.DataFrame({"A": 100.0, "B": 50.0, "C": 20.0, "D": 10.0}, ix)
    W = pd.DataFrame([[.25, .25, .25, -.2]] * 3, ix, close.columns)
    a, b = run_backtest(close, W, s), run_backtest_fast(close, W, s)
    same(a, b)
    assert b.refusals == {"NET_EXPOSURE": 4}
    assert b.orders["symbol"].tolist()[:2] == ["A", "D"]  # day 0: A passes, B and C would take the net past 40 %, D passes


def test_clock_does_not_depend_on_the_index_unit():
    """pandas may build microsecond indexes (`pd.date_range(..., unit="us")`): the engine's clock (seconds since the
    epoch) must read the same, or every time window (stale price, duplicates, rate) is mis-scaled 1,000-fold."""
    close, W, opn, s, breakers, start = make_case(7)
    s = s.replace(risk__max_price_age_seconds=3_600.0, risk__duplicate_window_seconds=864_000.0)
    c_ns, w_ns = close.set_axis(close.index.as_unit("ns")), W.set_axis(close.index.as_unit("ns"))
    ref = run_backtest(c_ns, w_ns, s, circuit_breakers=breakers)
    cu, wu = close.set_axis(close.index.as_unit("us")), W.set_axis(close.index.as_unit("us"))
    assert cu.index.asi8[1] - cu.index.asi8[0] != c_ns.index.asi8[1] - c_ns.index.asi8[0]  # really another unit
    assert sum(ref.refusals.values()) > 0
    for run in (run_backtest, run_backtest_fast):
        got = run(cu, wu, s, circuit_breakers=breakers)
        assert got.refusals == ref.refusals and got.n_orders == ref.n_orders, (run.__name__, got.refusals, ref.refusals)
        np.testing.assert_allclose(got.equity.to_numpy(), ref.equity.to_numpy(), rtol=1e-12)
