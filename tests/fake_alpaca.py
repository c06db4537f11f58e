"""A local fake of the parts of Alpaca's trading API that trading_lib uses, for tests with the REAL alpaca-py client.

Routes (JSON shapes as https://docs.alpaca.markets/reference documents them; alpaca-py's models parse them):
  GET /v2/account, GET /v2/positions, POST /v2/orders, GET /v2/orders (status=open|closed|all),
  GET /v2/orders:by_client_order_id?client_order_id=..., GET /v2/orders/{id}, DELETE /v2/orders/{id}.
A reused client_order_id answers 422 {"code": 40010001, "message": "client_order_id must be unique"} (permanent, also
after a cancel, as on Alpaca: alpaca-py issue #260).

Fault injection: `fake.plan(route, *faults)` queues faults for the next requests on `route` (one fault per request):
  429 / 500 / 502 / 503 / 504 (int)  answer that status, do nothing (429 carries X-RateLimit-* headers)
  "504_after_accept"                 handle the request (the order IS stored), then answer 504
  "timeout_after_accept"             handle the request, then sleep `fake.delay` seconds before answering
  "timeout"                          sleep `fake.delay` seconds, then answer 504 without handling
  ("fill", price[, client_order_id]) fill every open order (or that one) at `price` before handling (a fill happened meanwhile)
Routes: "GET /v2/account", "GET /v2/positions", "POST /v2/orders", "GET /v2/orders", "GET /v2/orders:by_client_order_id",
"GET /v2/orders/{id}", "DELETE /v2/orders/{id}".

Usage:
    with FakeAlpaca() as fake:
        fake.plan("POST /v2/orders", "504_after_accept")
        broker = AlpacaBroker(settings, environ=KEYS, url_override=fake.url)
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict, deque
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

OPEN_STATUSES = {"new", "accepted", "pending_new", "partially_filled", "accepted_for_bidding", "held", "calculated",
                 "done_for_day", "pending_cancel", "pending_replace", "stopped", "suspended"}
DUPLICATE = {"code": 40010001, "message": "client_order_id must be unique"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class FakeAlpaca:
    "In-memory Alpaca trading account behind a ThreadingHTTPServer on 127.0.0.1:<free port>, served from a thread."

    def __init__(self, cash: float = 100_000.0, delay: float = 1.0):
        self.cash, self.delay = float(cash), delay
        self.orders: dict[str, dict] = {}          # broker id → order JSON (Alpaca shape)
        self.positions: dict[str, dict] = {}       # symbol → {"qty": signed float, "avg": price}
        self.last_price: dict[str, float] = {}
        self.requests: list[dict] = []             # every request: method, route, path, query, body, headers
        self.faults: dict[str, deque] = defaultdict(deque)
        self.lock = threading.RLock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # one small response per request: no 40 ms delayed-ACK stalls
            def do_GET(self): fake._handle(self, "GET")
            def do_POST(self): fake._handle(self, "POST")
            def do_DELETE(self): fake._handle(self, "DELETE")
            def log_message(self, *a): pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            def handle_error(self, request, client_address): pass  # a client that timed out closed its socket

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self): self.thread.start(); return self
    def __exit__(self, *a): self.server.shutdown(); self.server.server_close(); self.thread.join(5)

    # ---- test controls ---------------------------------------------------------------------------------------------
    def plan(self, route: str, *faults) -> None:
        "Queue `faults` for the next requests on `route` (see the module docstring)."
        with self.lock: self.faults[route].extend(faults)

    def count(self, route: str) -> int:
        "How many requests reached `route`."
        return sum(r["route"] == route for r in self.requests)

    def by_client_id(self, cid: str) -> list[dict]:
        return [o for o in self.orders.values() if o["client_order_id"] == cid]

    def add_order(self, symbol: str, side: str, qty: float, client_order_id: str | None = None, status: str = "new") -> dict:
        "Store an order directly (e.g. an EXTERNAL order placed in Alpaca's UI: Alpaca generates its client id)."
        with self.lock:
            return self._store({"symbol": symbol, "side": side, "qty": qty, "type": "market", "time_in_force": "day",
                                "client_order_id": client_order_id or str(uuid.uuid4())}, status)

    def fill(self, price: float, client_order_id: str | None = None) -> None:
        "Fill every open order (or just `client_order_id`) completely at `price`; positions and cash follow."
        with self.lock:
            for o in list(self.orders.values()):
                if o["status"] in OPEN_STATUSES and client_order_id in (None, o["client_order_id"]):
                    self._fill(o, float(price))

    def set_position(self, symbol: str, qty: float, price: float) -> None:
        "Put a position straight into the account (e.g. one opened by hand)."
        with self.lock:
            self.positions[symbol] = {"qty": float(qty), "avg": float(price)}; self.last_price[symbol] = float(price)

    # ---- account book ----------------------------------------------------------------------------------------------
    def _store(self, body: dict, status: str = "accepted") -> dict:
        now = _now()
        o = {"id": str(uuid.uuid4()), "client_order_id": body["client_order_id"], "created_at": now, "updated_at": now,
             "submitted_at": now, "filled_at": None, "expired_at": None, "expires_at": None, "canceled_at": None,
             "failed_at": None, "replaced_at": None, "replaced_by": None, "replaces": None,
             "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, body["symbol"])), "symbol": body["symbol"],
             "asset_class": "us_equity", "notional": None, "qty": str(body["qty"]), "filled_qty": "0",
             "filled_avg_price": None, "order_class": "simple", "order_type": body.get("type", "market"),
             "type": body.get("type", "market"), "side": body["side"], "time_in_force": body.get("time_in_force", "day"),
             "limit_price": None if body.get("limit_price") is None else str(body["limit_price"]), "stop_price": None,
             "status": status, "extended_hours": bool(body.get("extended_hours", False)), "legs": None,
             "trail_percent": None, "trail_price": None, "hwm": None, "position_intent": None}
        self.orders[o["id"]] = o
        return o

    def _fill(self, o: dict, price: float) -> None:
        q = float(o["qty"]) - float(o["filled_qty"]); sign = 1 if o["side"] == "buy" else -1
        p = self.positions.setdefault(o["symbol"], {"qty": 0.0, "avg": price})
        new = p["qty"] + sign * q
        if p["qty"] * sign >= 0 and new != 0: p["avg"] = (abs(p["qty"]) * p["avg"] + q * price) / abs(new)
        p["qty"] = new
        if new == 0: del self.positions[o["symbol"]]
        self.cash -= sign * q * price; self.last_price[o["symbol"]] = price
        o.update(status="filled", filled_qty=o["qty"], filled_avg_price=str(price), filled_at=_now(), updated_at=_now())

    def _account(self) -> dict:
        mv = sum(p["qty"] * self.last_price[s] for s, p in self.positions.items())
        held = sum(float(o["qty"]) * self.last_price.get(o["symbol"], 0.0) for o in self.orders.values()
                   if o["side"] == "buy" and o["status"] in OPEN_STATUSES)
        return {"id": "8f6c3c5e-5f8e-4c6a-9b8e-1f2a3b4c5d6e", "account_number": "PA0FAKE0001", "status": "ACTIVE",
                "crypto_status": "ACTIVE", "currency": "USD", "cash": str(self.cash), "buying_power": str(self.cash - held),
                "equity": str(self.cash + mv), "portfolio_value": str(self.cash + mv), "long_market_value": str(mv),
                "pattern_day_trader": False, "trading_blocked": False, "transfers_blocked": False,
                "account_blocked": False, "created_at": "2024-01-02T14:30:00Z", "multiplier": "1",
                "shorting_enabled": True, "daytrade_count": 0}

    def _position(self, s: str, p: dict) -> dict:
        px = self.last_price[s]
        return {"asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, s)), "symbol": s, "exchange": "NASDAQ",
                "asset_class": "us_equity", "asset_marginable": True, "avg_entry_price": str(p["avg"]),
                "qty": str(p["qty"]), "qty_available": str(p["qty"]), "side": "long" if p["qty"] > 0 else "short",
                "market_value": str(p["qty"] * px), "cost_basis": str(p["qty"] * p["avg"]),
                "unrealized_pl": str(p["qty"] * (px - p["avg"])), "current_price": str(px), "lastday_price": str(px),
                "change_today": "0"}

    # ---- HTTP ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _route(method: str, path: str) -> str:
        if path.startswith("/v2/orders/"): return f"{method} /v2/orders/{{id}}"
        return f"{method} {path}"

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        u = urlparse(h.path); q = {k: v[0] for k, v in parse_qs(u.query).items()}
        n = int(h.headers.get("Content-Length") or 0)
        body = json.loads(h.rfile.read(n)) if n else None
        route = self._route(method, u.path)
        with self.lock:
            self.requests.append({"method": method, "route": route, "path": u.path, "query": q, "body": body,
                                  "headers": dict(h.headers)})
            fault = self.faults[route].popleft() if self.faults[route] else None
        if isinstance(fault, tuple) and fault[0] == "fill":
            self.fill(*fault[1:]); fault = None
        if isinstance(fault, int):
            extra = {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0",
                     "X-RateLimit-Reset": str(int(time.time()))} if fault == 429 else {}
            return self._send(h, fault, {"code": fault * 100000, "message": f"injected {fault}"}, extra)
        if fault == "timeout":
            time.sleep(self.delay); return self._send(h, 504, {"code": 50400000, "message": "injected timeout"})
        with self.lock: status, payload = self._dispatch(method, u.path, q, body)
        if fault == "504_after_accept":
            return self._send(h, 504, {"code": 50400000, "message": "gateway timeout (order accepted)"})
        if fault == "timeout_after_accept": time.sleep(self.delay)
        self._send(h, status, payload)

    def _dispatch(self, method, path, q, body):
        if method == "GET" and path == "/v2/account": return 200, self._account()
        if method == "GET" and path == "/v2/positions":
            return 200, [self._position(s, p) for s, p in sorted(self.positions.items())]
        if method == "POST" and path == "/v2/orders":
            miss = [k for k in ("symbol", "qty", "side", "type", "time_in_force") if body.get(k) in (None, "")]
            if miss: return 422, {"code": 40010000, "message": f"missing fields: {miss}"}
            cid = body.get("client_order_id") or str(uuid.uuid4())
            if self.by_client_id(cid): return 422, DUPLICATE
            if body["side"] == "buy" and float(body["qty"]) * self.last_price.get(body["symbol"], 0.0) > self._buying_power():
                return 403, {"code": 40310000, "message": "insufficient buying power"}
            return 200, self._store({**body, "client_order_id": cid})
        if method == "GET" and path == "/v2/orders":
            st = q.get("status", "open")
            keep = (lambda o: o["status"] in OPEN_STATUSES) if st == "open" else \
                   (lambda o: o["status"] not in OPEN_STATUSES) if st == "closed" else (lambda o: True)
            rows = sorted((o for o in self.orders.values() if keep(o)), key=lambda o: o["submitted_at"], reverse=True)
            return 200, rows[: int(q.get("limit", 50))]
        if method == "GET" and path == "/v2/orders:by_client_order_id":
            hit = self.by_client_id(q.get("client_order_id", ""))
            return (200, hit[0]) if hit else (404, {"code": 40410000, "message": "order not found"})
        if path.startswith("/v2/orders/"):
            o = self.orders.get(path.rsplit("/", 1)[1])
            if o is None: return 404, {"code": 40410000, "message": "order not found"}
            if method == "GET": return 200, o
            if method == "DELETE":
                if o["status"] not in OPEN_STATUSES:
                    return 422, {"code": 42210000, "message": f"order is not cancelable (status {o['status']})"}
                o.update(status="canceled", canceled_at=_now(), updated_at=_now()); return 204, None
        return 404, {"code": 40410000, "message": f"no route {method} {path}"}

    def _buying_power(self) -> float:
        return float(self._account()["buying_power"])

    @staticmethod
    def _send(h, status: int, payload, headers: dict | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        try:
            h.send_response(status)
            for k, v in (headers or {}).items(): h.send_header(k, v)
            if data: h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data))); h.end_headers()
            if data: h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): the order stays stored, as at a real broker
