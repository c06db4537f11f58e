"""AlpacaSource against a local HTTP server that answers GET /v2/stocks/bars in Alpaca's documented shape
(https://docs.alpaca.markets/reference/stockbars), through the real alpaca-py client.
Run: .venv/bin/python -m pytest -p no:nbval tests/test_alpaca_data.py -q"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest

from trading_lib.data.sources import (
    BAR_COLUMNS,
    INDEX_NAMES,
    AlpacaCredentialsError,
    AlpacaSource,
    CachedSource,
    DataValidationError,
    ParquetStore,
)

KEYS = {"ALPACA_API_KEY": "PKTESTKEY123", "ALPACA_SECRET_KEY": "test-secret-456"}

def bar(t, o, h, l, c, v): return {"t": t, "o": o, "h": h, "l": l, "c": c, "v": v, "n": 100, "vw": (h + l + c) / 3}

# Two pages: alpaca-py must follow next_page_token. Daily bars are stamped at midnight New York time (05:00Z in winter).
PAGE1 = {"bars": {"AAPL": [bar("2024-01-02T05:00:00Z", 187.15, 188.44, 183.885, 185.64, 82488674),
                           bar("2024-01-03T05:00:00Z", 184.22, 185.88, 183.43, 184.25, 58414460)]},
         "next_page_token": "QUFQTHxEfDIwMjQtMDEtMDNUMDU6MDA6MDAuMDAwMDAwMDAwWg=="}
PAGE2 = {"bars": {"AAPL": [bar("2024-01-04T05:00:00Z", 182.15, 183.0872, 180.88, 181.91, 71983570)],
                  "MSFT": [bar("2024-01-02T05:00:00Z", 373.86, 375.9, 366.77, 370.87, 25258633),
                           bar("2024-01-03T05:00:00Z", 369.01, 373.26, 368.51, 370.6, 23083465),
                           bar("2024-01-04T05:00:00Z", 370.665, 373.1, 367.17, 367.94, 20901503)]},
         "next_page_token": None}
BAD = {"bars": {"AAPL": [bar("2024-01-02T05:00:00Z", 187.15, 183.0, 184.0, 183.5, 1000)]}, "next_page_token": None}


class FakeAlpaca:
    "A local market-data server: records each request (path, query, headers) and serves the queued pages in turn."
    def __init__(self, pages):
        self.pages, self.requests = list(pages), []
        outer = self
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                u = urlparse(self.path)
                outer.requests.append({"path": u.path, "query": parse_qs(u.query), "headers": dict(self.headers)})
                if u.path != "/v2/stocks/bars" or not outer.pages:
                    self.send_response(404); self.end_headers(); self.wfile.write(b'{"message": "not found"}'); return
                body = json.dumps(outer.pages.pop(0)).encode()
                self.send_response(200); self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
            def log_message(self, *a): pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
    def __enter__(self): self.thread.start(); return self
    def __exit__(self, *a): self.server.shutdown(); self.server.server_close(); self.thread.join(5)


def utc(d): return pd.Timestamp(d, tz="UTC")


def test_bars_two_pages_exact_values_and_request():
    with FakeAlpaca([PAGE1, PAGE2]) as srv:
        src = AlpacaSource(url_override=srv.url, environ=KEYS)
        b = src.bars(["AAPL", "MSFT"], "2024-01-02", "2024-01-04")
    # two requests: the second carries the first page's token
    assert len(srv.requests) == 2
    q1, q2 = srv.requests[0]["query"], srv.requests[1]["query"]
    for r in srv.requests:
        assert r["path"] == "/v2/stocks/bars"
        assert r["headers"]["APCA-API-KEY-ID"] == KEYS["ALPACA_API_KEY"]
        assert r["headers"]["APCA-API-SECRET-KEY"] == KEYS["ALPACA_SECRET_KEY"]
    assert q1["symbols"] == ["AAPL,MSFT"] and q1["timeframe"] == ["1Day"] and q1["adjustment"] == ["all"]
    assert pd.Timestamp(q1["start"][0]) == utc("2024-01-02")
    assert pd.Timestamp(q1["end"][0]) == utc("2024-01-05")  # end is inclusive: the 2024-01-04 05:00Z bar is asked for
    assert "page_token" not in q1 and q2["page_token"] == [PAGE1["next_page_token"]]
    assert q2["symbols"] == q1["symbols"] and q2["adjustment"] == ["all"]

    # schema
    assert list(b.index.names) == list(INDEX_NAMES) and list(b.columns) == list(BAR_COLUMNS)
    assert str(b.index.levels[0].dtype) == "datetime64[ns, UTC]"
    assert (b.dtypes == np.float64).all() and b.index.is_monotonic_increasing
    # exact values: every bar of both pages, timestamps = New York trading date at 00:00 UTC
    rows = [(utc(x["t"][:10]), sym, x["o"], x["h"], x["l"], x["c"], float(x["v"]))
            for page in (PAGE1, PAGE2) for sym, bars in page["bars"].items() for x in bars]
    want = pd.DataFrame(rows, columns=["timestamp", "symbol", *BAR_COLUMNS]).set_index(["timestamp", "symbol"]).sort_index()
    want.index = want.index.set_levels(want.index.levels[0].as_unit("ns"), level=0)
    pd.testing.assert_frame_equal(b, want)
    assert b.loc[(utc("2024-01-04"), "AAPL"), "high"] == 183.0872
    # the gate ran and provenance is recorded without the keys
    assert src.last_report.n_rows == 6 and src.last_report.n_symbols == 2 and src.last_report.n_sessions == 3
    prov = b.attrs["provenance"]
    assert prov["source"] == "alpaca" and prov["adjustment"] == "all" and prov["base_url"] == srv.url
    assert KEYS["ALPACA_SECRET_KEY"] not in json.dumps(prov) and KEYS["ALPACA_API_KEY"] not in json.dumps(prov)
    assert KEYS["ALPACA_SECRET_KEY"] not in repr(src)


def test_bad_bar_high_below_low_is_refused():
    with FakeAlpaca([BAD]) as srv:
        with pytest.raises(DataValidationError) as ei:
            AlpacaSource(url_override=srv.url, environ=KEYS).bars(["AAPL"], "2024-01-02", "2024-01-02")
    e = ei.value
    assert (e.check, e.symbol, e.timestamp, e.field, e.value) == ("high < low", "AAPL", utc("2024-01-02"), "high", 183.0)
    assert "AAPL" in str(e) and "field='high'" in str(e) and "low=184.0" in str(e)
    assert isinstance(e, ValueError) and len(srv.requests) == 1


def test_missing_keys_clear_error_without_contacting_server(monkeypatch):
    monkeypatch.delenv("ALPACA_API_KEY", raising=False); monkeypatch.delenv("ALPACA_SECRET_KEY", raising=False)
    with FakeAlpaca([PAGE1, PAGE2]) as srv:
        for src in (AlpacaSource(url_override=srv.url), AlpacaSource(url_override=srv.url, environ={"ALPACA_API_KEY": "only-one"})):
            with pytest.raises(AlpacaCredentialsError, match="ALPACA_API_KEY and ALPACA_SECRET_KEY"):
                src.bars(["AAPL"], "2024-01-02", "2024-01-04")
    assert srv.requests == []


def test_keys_read_from_environment_and_cached(monkeypatch, tmp_path):
    for k, v in KEYS.items(): monkeypatch.setenv(k, v)
    with FakeAlpaca([PAGE1, PAGE2]) as srv:
        cache = CachedSource(AlpacaSource(url_override=srv.url), ParquetStore(tmp_path / "store"))
        first = cache.bars(["AAPL", "MSFT"], "2024-01-02", "2024-01-04")
        second = cache.bars(["MSFT"], "2024-01-03", "2024-01-04")  # covered: served from the store
    assert len(srv.requests) == 2 and cache.fetched == []
    assert srv.requests[0]["headers"]["APCA-API-KEY-ID"] == KEYS["ALPACA_API_KEY"]
    ts, sym = first.index.get_level_values("timestamp"), first.index.get_level_values("symbol")
    pd.testing.assert_frame_equal(second, first[(ts >= utc("2024-01-03")) & (sym == "MSFT")])
    assert second.attrs["provenance"]["source"] == "alpaca"
    assert sorted(p.parent.name for p in (tmp_path / "store").glob("*/part.parquet")) == ["symbol=AAPL", "symbol=MSFT"]


def test_all_symbols_refused():
    with pytest.raises(ValueError, match="explicit list"):
        AlpacaSource(environ=KEYS).bars(["all"])
