"""The data gate (issue 16, items 8-10): unadjusted splits, frozen prices, bars after the session clock, off-stamp and
naive timestamps, symbols missing under `universe = all`, the one-session rule for the live loop, and
`trading-lib data check` on a user's own file. Real data: arch's S&P 500 / NASDAQ OHLCV and skfolio's 20 stocks."""
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trading_lib.config import load_settings
from trading_lib.data import sources as S
from trading_lib.data.sources import DataValidationError, EmbeddedSource, ParquetStore, load_market, validate_bars

ROOT = Path(__file__).resolve().parents[1]
CLI = shutil.which("trading-lib") or str(Path(sys.executable).with_name("trading-lib"))
PRICES = ["open", "high", "low", "close"]


@pytest.fixture(scope="module")
def good():
    "Q1 2018 of arch's S&P 500 and NASDAQ composite, real OHLCV."
    return EmbeddedSource("indices").bars(None, "2018-01-02", "2018-03-29")


@pytest.fixture(scope="module")
def stocks():
    "AAPL, JPM, XOM adjusted closes for 2020-2021 (skfolio)."
    return EmbeddedSource().bars(["AAPL", "JPM", "XOM"], "2020-01-01", "2021-12-31")


def _settings(**kw):
    return load_settings(environ={}).replace(**kw)


def _split(bars, sym, day, factor):
    "An unadjusted split: every price of `sym` from `day` on divided by `factor`."
    b = bars.copy()
    cols = [c for c in PRICES if b[c].notna().any()]
    b.loc[(slice(pd.Timestamp(day, tz="UTC"), None), sym), cols] /= factor
    return b


@pytest.mark.parametrize("factor,name", [(2, "1/2"), (4, "1/4"), (3, "1/3"), (1.5, "2/3"), (0.5, "2")])
def test_unadjusted_split_is_refused_naming_the_ratio(stocks, factor, name):
    # a 2-for-1 (-50 %) and a 4-for-1 (-75 %) passed the old |move| <= 75 % rule; 2020-08-28 moved -0.16 %
    bad = _split(stocks, "AAPL", "2020-08-28", factor)
    with pytest.raises(DataValidationError) as e:
        validate_bars(bad)
    t = pd.Timestamp("2020-08-28", tz="UTC")
    assert (e.value.check, e.value.symbol, e.value.timestamp, e.value.field) == ("split ratio", "AAPL", t, "close")
    assert e.value.value == bad.loc[(t, "AAPL"), "close"]
    assert f"{name} split ratio" in str(e.value)
    ratio = bad.loc[(t, "AAPL"), "close"] / bad.loc[(pd.Timestamp("2020-08-27", tz="UTC"), "AAPL"), "close"]
    assert f"close_t/close_(t-1) = {ratio:.4f}" in str(e.value)


def test_split_tolerance_trade_off_on_the_real_aapl_split(stocks):
    # AAPL's real 4-for-1 of 2020-08-31, unadjusted, is 3.4 % from 1/4 (AAPL rose 3.4 % that day): the default 0.01
    # misses it, 0.05 refuses it. The limitation is stated in settings.ini and the notebook.
    bad = _split(stocks, "AAPL", "2020-08-31", 4)
    t = pd.Timestamp("2020-08-31", tz="UTC")
    r = bad.loc[(t, "AAPL"), "close"] / bad.loc[(pd.Timestamp("2020-08-28", tz="UTC"), "AAPL"), "close"]
    assert abs(r - 0.2585) < 5e-4
    assert validate_bars(bad, split_tolerance=0.01)[1].nearest_split[:2] == ("AAPL", t)
    with pytest.raises(DataValidationError, match="3.39% from a 1/4 split ratio"):
        validate_bars(bad, split_tolerance=0.05)


def test_split_refused_by_load_market_from_a_store(tmp_path, stocks):
    # the path a replay takes: settings -> source -> gate
    st = ParquetStore(tmp_path / "store", gate=dict(split_tolerance=0))
    st.write(_split(stocks, "AAPL", "2020-08-28", 2)); st.write_series(EmbeddedSource().series("SP500"))
    s = _settings(data__source="parquet", data__store_dir=str(tmp_path / "store"), data__start="2020-01-01",
                  universe__symbols=["all"], features__use_vix=False)
    with pytest.raises(DataValidationError, match=r"split ratio: 1 offending row\(s\); first at symbol='AAPL' timestamp=2020-08-28"):
        load_market(s)
    assert load_market(s.replace(data__split_tolerance=0)).symbols == ["AAPL", "JPM", "XOM"]  # the setting switches it


def test_marked_corporate_action_passes_and_survives_the_store(tmp_path, stocks):
    bad = _split(stocks, "AAPL", "2020-08-28", 4)
    bad.attrs["corporate_actions"] = [("AAPL", pd.Timestamp("2020-08-28", tz="UTC"))]
    assert validate_bars(bad)[1].n_rows == len(bad)
    st = ParquetStore(tmp_path / "s"); st.write(bad)
    back = st.bars()
    assert back.attrs["corporate_actions"] == [("AAPL", "2020-08-28 00:00:00+00:00")]
    assert len(back) == len(bad)


def test_embedded_real_data_and_split_ratios():
    # the real adjusted history: RRC's 1990-04-10 bar (ratio 0.3332 = 1/3 within 0.03 %) is refused, not whitelisted
    with pytest.raises(DataValidationError) as e:
        EmbeddedSource().bars()
    assert (e.value.check, e.value.symbol, str(e.value.timestamp.date())) == ("split ratio", "RRC", "1990-04-10")
    m = load_market(load_settings(environ={}))  # settings.ini starts on 1990-04-11
    rep = m.validation_report
    assert (len(m.symbols), rep.n_sessions) == (20, 8243)
    assert rep.nearest_split[0] == "BBY" and rep.nearest_split[3] == "2/3" and 0.011 < rep.nearest_split[4] < 0.012
    assert rep.max_frozen_seen == 60 and rep.missing_symbols == []


def test_bar_after_the_session_clock(tmp_path, stocks):
    # a bar of 2031 in a store (as in 2022's replay) is refused at load time with the wall clock
    b = stocks.copy()
    row = b.xs(("AAPL",), level=["symbol"], drop_level=False).iloc[[-1]].copy()
    row.index = pd.MultiIndex.from_tuples([(pd.Timestamp("2031-01-02", tz="UTC"), "AAPL")], names=b.index.names)
    b = pd.concat([b, row]).sort_index()
    st = ParquetStore(tmp_path / "st"); st.write_series(EmbeddedSource().series("SP500"))
    for sym, g in b.groupby(level="symbol"):  # files written by another tool: the store's own write would refuse the bar
        st.path(sym).parent.mkdir(parents=True); g.to_parquet(st.path(sym))
    s = _settings(data__source="parquet", data__store_dir=str(tmp_path / "st"), data__start="2020-01-01", data__end="",
                  universe__symbols=["all"], features__use_vix=False, data__max_gap_sessions=10_000)
    with pytest.raises(DataValidationError, match=r"future bar: 1 offending row\(s\); first at symbol='AAPL' timestamp=2031-01-02T00:00:00\+00:00 field='timestamp'"):
        load_market(s)


def test_daily_bar_off_the_session_stamp(good):
    # 05:00 UTC (New York midnight) among 00:00 UTC stamps
    t = good.index.get_level_values(0).unique()[7]
    b = good.rename(index={t: t + pd.Timedelta(hours=5)}, level="timestamp")
    with pytest.raises(DataValidationError) as e:
        validate_bars(b)
    assert (e.value.check, e.value.symbol, e.value.count) == ("session stamp", "NASDAQ", 2)
    assert "at 05:00 UTC" in str(e.value) and str((t + pd.Timedelta(hours=5)).date()) in str(e.value)


def test_naive_timestamps_name_the_symbol(tmp_path, good):
    # a hand-made store with zone-less timestamps: was a raw TypeError from a date comparison
    naive = good.copy(); naive.index = naive.index.set_levels(naive.index.levels[0].tz_localize(None), level=0)
    st = ParquetStore(tmp_path / "n"); p = st.path("SP500"); p.parent.mkdir(parents=True)
    naive.xs("SP500", level="symbol", drop_level=False).to_parquet(p)
    with pytest.raises(DataValidationError, match="naive timestamp: 61 offending row.*symbol='SP500' timestamp=2018-01-02"):
        st.bars(None, "2018-01-05")


def test_frozen_price_is_refused_with_a_setting(good):
    b = good.copy(); ts = b.index.get_level_values(0).unique()
    b.loc[(ts[10:40], "SP500"), PRICES] = b.loc[(ts[9], "SP500"), "close"]
    with pytest.raises(DataValidationError) as e:
        validate_bars(b, max_frozen_sessions=20)
    assert (e.value.check, e.value.symbol, e.value.timestamp, e.value.count) == ("frozen price", "SP500", ts[30], 10)
    assert "unchanged for 21 consecutive bars" in str(e.value)
    assert validate_bars(b, max_frozen_sessions=0)[1].max_frozen_seen == 30


def test_symbol_missing_under_universe_all_is_warned_and_recorded(tmp_path):
    emb = EmbeddedSource()
    st = ParquetStore(tmp_path / "g")
    st.write(emb.bars(["AAPL", "KO"], "2016-01-01", "2016-12-31")); st.write(emb.bars(["JPM"], "2015-01-01", "2015-12-31"))
    st.write_series(emb.series("SP500"))
    s = _settings(data__source="parquet", data__store_dir=str(tmp_path / "g"), data__start="2016-01-01", data__end="2016-12-31",
                  universe__symbols=["all"], features__use_vix=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = load_market(s)
    assert m.symbols == ["AAPL", "KO"]
    assert m.validation_report.missing_symbols == ["JPM"] and m.provenance["missing_symbols"] == ["JPM"]
    assert any("universe = all" in str(x.message) and "['JPM']" in str(x.message) for x in w)


def test_check_bar_one_session_rule():
    # what the live loop's per-session gate calls: a 2-for-1 on one symbol is refused, the others pass
    s = load_settings(environ={})
    t = pd.Timestamp("2022-06-01", tz="UTC")
    refused, probs = S.check_bar(["AAPL", "MSFT", "XOM"], t, [75.0, 270.0, np.nan], [150.0, 268.0, 90.0], s, now=t)
    assert refused.tolist() == [True, False, False]
    assert [(p.check, p.symbol, p.timestamp, p.field, p.value) for p in probs] == [("split ratio", "AAPL", t, "close", 75.0)]
    assert "0.5000" in probs[0].detail and "1/2" in probs[0].detail and "last valid close 150.0" in probs[0].detail
    assert S.check_bar(["AAPL"], t, [75.0], [150.0], s, corporate_actions=["AAPL"])[0].tolist() == [False]
    r, p = S.check_bar(["AAPL"], pd.Timestamp("2031-01-02", tz="UTC"), [150.0], [150.0], s, now=t)
    assert r.tolist() == [True] and p[0].check == "future bar"


def _cli(args, cwd, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kw)


def _csv(path, good):
    d = good.reset_index(); d["timestamp"] = d["timestamp"].dt.strftime("%Y-%m-%d"); d.to_csv(path, index=False); return d


def test_cli_data_check(tmp_path, good):
    proj = tmp_path / "proj"; proj.mkdir(); shutil.copy(ROOT / "settings.ini", proj / "settings.ini")
    d = _csv(tmp_path / "ok.csv", good)
    r = _cli(["data", "check", str(tmp_path / "ok.csv")], proj)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"OK: {tmp_path / 'ok.csv'}: 122 bars, 2 symbols, 61 sessions, 2018-01-02 → 2018-03-29")
    bad = d.astype({"close": object})
    bad.loc[3, "close"] = "n/a"                     # not a number
    bad.loc[5, "timestamp"] = "2018-01-05 16:00"    # zone-less time of day
    bad.loc[7, "timestamp"] = "2018-01-05T05:00:00Z"  # off the session stamp
    sp = bad.symbol.eq("SP500") & (bad.timestamp >= "2018-02-01")
    bad.loc[sp, PRICES] = bad.loc[sp, PRICES].astype(float) / 2   # an unadjusted 2-for-1
    bad.to_csv(tmp_path / "bad.csv", index=False)
    r = _cli(["data", "check", str(tmp_path / "bad.csv")], proj)
    assert r.returncode == 1, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4 and "4 problem(s)" in r.stderr
    want = [f"not a number: symbol='{d.symbol[3]}' timestamp={d.timestamp[3]} field='close' value='n/a'",
            f"naive timestamp: symbol='{d.symbol[5]}' timestamp=2018-01-05 16:00 field='timestamp' value='2018-01-05 16:00'",
            f"session stamp: symbol='{d.symbol[7]}' timestamp=2018-01-05T05:00:00+00:00 field='timestamp'",
            "split ratio: symbol='SP500' timestamp=2018-02-01T00:00:00+00:00 field='close' value="]
    for w in want: assert any(line.startswith(w) for line in lines), (w, lines)
    r = _cli(["data", "check", str(tmp_path / "missing.csv")], proj)
    assert (r.returncode, "no such file" in r.stderr) == (2, True)
    (tmp_path / "x.txt").write_text("hello")
    assert _cli(["data", "check", str(tmp_path / "x.txt")], proj).returncode == 2


def test_cli_data_import_then_load(tmp_path, good):
    proj = tmp_path / "proj"; proj.mkdir(); shutil.copy(ROOT / "settings.ini", proj / "settings.ini")
    d = good.reset_index()  # the layout as Parquet, with zone-aware timestamps
    d.to_parquet(tmp_path / "bars.parquet", index=False)
    r = _cli(["data", "import", str(tmp_path / "bars.parquet"), "--benchmark", "SP500"], proj)
    assert r.returncode == 0, r.stderr
    assert "imported 1 symbol(s)" in r.stdout and "benchmark series 'SP500'" in r.stdout
    s = load_settings(proj / "settings.ini", environ={}).replace(
        data__source="parquet", data__store_dir=str(proj / "data_store"), data__start="2018-01-01",
        universe__symbols=["all"], universe__benchmark="SP500", features__use_vix=False)
    m = load_market(s)
    assert m.symbols == ["NASDAQ"] and len(m.benchmark) == 61
    pd.testing.assert_series_equal(m.bars["close"], good.xs("NASDAQ", level="symbol", drop_level=False)["close"])
