"""The control API: REST under /api (OpenAPI at /api/openapi.json), a WebSocket at /api/ws and
the dashboard at /.

Every request names a bearer token; its role decides what it may do (viewer reads, operator also
acts, admin also changes parameters) and its name is who acted, carried into ctl.* and the audit
trail. Every endpoint is rate-limited per token (per address before a token is known), over a
moving minute (the ``limits`` library). No CORS unless ``control.cors_origins`` names origins.
The routes only translate: the state comes from the FleetView, the actions go through the Fleet
(services/control/runtime.py), which publishes them and waits for the services' answers.
"""

# No "from __future__ import annotations" here: FastAPI reads the routes' annotations at runtime,
# and the role dependencies (Reader, Operator, Admin) are local to build_api.
import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, Field, ValidationError

from libs.common.config import ControlSettings, Role
from proto.control import CONFIG_SECTIONS, Command, ConfigSection
from services.control.auth import Identity, TokenBook, bearer
from services.control.view import FleetView

ROLE_OF_KIND = {"read": "viewer", "act": "operator", "admin": "admin"}
GOING_AWAY = "\x00going-away"  # told to a WebSocket client's queue when the service stops
AUDIT_KINDS = ("ctl", "ack", "alert", "mode", "dlq", "news", "sentiment", "policy", "param", "signal")
Responses = dict[int | str, dict[str, Any]]


class Answers(BaseModel):
    """What the services said about an action: each responder's ack, and who stayed silent."""

    command_id: str
    ok: bool
    acks: list[dict[str, Any]]
    silent: list[str]


class ParamsAnswer(Answers):
    section: str
    values: dict[str, Any]
    changed: dict[str, list[Any]]


# -- request bodies ------------------------------------------------------------------------------
class KillIn(BaseModel):
    flatten: bool = False


class ModeIn(BaseModel):
    mode: Literal["LIVE", "DEGRADED", "OBSERVE"]


class StrategyIn(BaseModel):
    symbol: str | None = Field(None, min_length=1, max_length=32, pattern=r"^[A-Za-z0-9.\-]+$")


class ReplaceIn(BaseModel):
    quantity: float | None = Field(None, gt=0, lt=1e9)
    limit_price: float | None = Field(None, gt=0, lt=1e9)


class ParamsIn(BaseModel):
    values: dict[str, Any]


class SignalIn(BaseModel):
    """An outside model's prediction for a symbol: the QOS input "external" (seed 000)."""

    symbol: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9.\-]+$")
    source: str = Field(min_length=1, max_length=64)
    signal: float = Field(ge=-1, le=1, description="direction and conviction, in [-1, 1]")
    horizon: str = Field("", max_length=8)
    confidence: float = Field(1.0, ge=0, le=1)
    ts_ns: int | None = Field(None, ge=0, description="the prediction's time (default: now)")


class Fleet(Protocol):
    """What the API needs of the running fleet (services/control/runtime.py implements it)."""

    view: FleetView

    def now_ns(self) -> int: ...

    async def command(self, command: Command, args: dict[str, str], who: str) -> Answers: ...

    def params(self, section: ConfigSection) -> dict[str, Any]: ...

    async def change_params(
        self, section: ConfigSection, values: dict[str, Any], who: str
    ) -> ParamsAnswer: ...

    async def signal(self, body: SignalIn, who: str) -> str: ...

    def thresholds(self) -> tuple[dict[str, float], list[str]]: ...

    def limits(self) -> Any: ...

    async def audit(self, since: dt.datetime, kinds: list[str], limit: int) -> list[dict[str, Any]]: ...

    async def watch_quotes(self, symbol: str) -> None: ...

    def subscribe(self) -> asyncio.Queue[str | None]: ...

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None: ...


# -- the app -------------------------------------------------------------------------------------
def build_api(fleet: Fleet, cfg: ControlSettings, tokens: TokenBook, web_dir: Path | None = None) -> FastAPI:
    api = FastAPI(
        title="tradefleet control",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        api.add_middleware(
            CORSMiddleware,
            allow_origins=cfg.cors_origins,
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "Content-Type"],
        )
    limiter = MovingWindowRateLimiter(MemoryStorage())
    per_kind = {
        "read": RateLimitItemPerMinute(cfg.read_per_minute),
        "act": RateLimitItemPerMinute(cfg.act_per_minute),
        "admin": RateLimitItemPerMinute(cfg.act_per_minute),
    }
    anonymous = RateLimitItemPerMinute(max(cfg.act_per_minute, 10))

    def guard(kind: str) -> Callable[[Request], Awaitable[Identity]]:
        role: Role = ROLE_OF_KIND[kind]  # type: ignore[assignment]

        async def check(request: Request) -> Identity:
            ident = tokens.identify(bearer(request.headers.get("authorization")))
            if ident is None:
                address = request.client.host if request.client else "unknown"
                if not limiter.hit(anonymous, "anon", address):
                    raise HTTPException(429, "too many requests without a valid token", {"Retry-After": "60"})
                raise HTTPException(401, "a valid bearer token is needed", {"WWW-Authenticate": "Bearer"})
            if not limiter.hit(per_kind[kind], kind, ident.name):
                raise HTTPException(429, f"rate limit: {per_kind[kind]} for {kind}", {"Retry-After": "60"})
            if not ident.may(role):
                raise HTTPException(403, f"{ident.name} is {ident.role}: this needs {role}")
            return ident

        return check

    Reader = Annotated[Identity, Depends(guard("read"))]
    Operator = Annotated[Identity, Depends(guard("act"))]
    Admin = Annotated[Identity, Depends(guard("admin"))]
    view = fleet.view
    denied: Responses = {401: {"description": "no valid token"}, 429: {"description": "rate limited"}}
    acting: Responses = {**denied, 403: {"description": "the token's role may not"}}

    # -- read ------------------------------------------------------------------------------------
    @api.get("/api/whoami", responses=denied)
    async def whoami(me: Reader) -> dict[str, str]:
        return {"name": me.name, "role": me.role}

    @api.get("/api/status", responses=denied)
    async def status(me: Reader) -> dict[str, Any]:
        return view.status(fleet.now_ns(), fleet.limits())

    @api.get("/api/positions", responses=denied)
    async def positions(me: Reader) -> dict[str, Any]:
        return view.positions()

    @api.get("/api/orders", responses=denied)
    async def orders(me: Reader) -> dict[str, Any]:
        return view.orders_view()

    @api.get("/api/pnl", responses=denied)
    async def pnl(me: Reader) -> dict[str, Any]:
        return view.pnl()

    @api.get("/api/qos", responses=denied)
    async def qos(me: Reader) -> dict[str, Any]:
        thresholds, entries_off = fleet.thresholds()
        return view.qos_view(thresholds, entries_off)

    @api.get("/api/models", responses=denied)
    async def models(me: Reader) -> dict[str, Any]:
        return view.models_view()

    @api.get("/api/signals", responses=denied)
    async def signals(me: Reader) -> dict[str, Any]:
        return view.signals()

    @api.get("/api/alerts", responses=denied)
    async def alerts(me: Reader) -> dict[str, Any]:
        return view.alerts_view()

    @api.get("/api/news", responses=denied)
    async def news(me: Reader) -> dict[str, Any]:
        return view.news_view()

    @api.get("/api/tca", responses=denied)
    async def tca(me: Reader) -> dict[str, Any]:
        return view.tca_view()

    @api.get("/api/feedback", responses=denied)
    async def feedback(me: Reader) -> dict[str, Any]:
        """Execution and slippage data out (seed 000): the TCA record of each finished order."""
        keys = (
            "client_order_id",
            "symbol",
            "side",
            "quantity",
            "order_type",
            "arrival_price",
            "avg_fill_price",
            "slippage_bps",
            "shortfall_bps",
            "cost_bps",
            "commission",
            "fill_ratio",
            "latency_ns",
            "ts_event",
        )
        return {"executions": [{k: r.get(k) for k in keys} for r in view.tca]}

    @api.get("/api/book", responses={**denied, 404: {"description": "no book for the symbol"}})
    async def book(me: Reader, symbol: Annotated[str | None, Query(max_length=32)] = None) -> dict[str, Any]:
        if symbol is None:
            known = set(view.books) | set(view.qos) | {p["symbol"] for p in view.positions()["positions"]}
            return {"symbols": sorted(known)}
        symbol = symbol.upper()
        await fleet.watch_quotes(symbol)  # from now on: quotes are followed only where looked at
        body = view.book(symbol)
        if body is None:
            raise HTTPException(404, f"no book for {symbol!r} yet (its quotes are followed from now)")
        return body

    @api.get("/api/audit", responses={**denied, 422: {"description": "a bad since"}})
    async def audit(
        me: Reader,
        since: Annotated[str, Query(max_length=40, description="-30m, -2h, -1d or ISO 8601")] = "-2h",
        kind: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> dict[str, Any]:
        start = _since(since, dt.datetime.now(dt.UTC))
        kinds = kind or [
            "ctl",
            "ack",
            "alert",
            "mode",
            "dlq",
            "news",
            "sentiment",
            "policy",
            "param",
            "signal",
        ]
        return {"rows": await fleet.audit(start, kinds, limit)}

    @api.get("/api/params/{section}", responses=denied)
    async def get_params(me: Reader, section: ConfigSection) -> dict[str, Any]:
        return fleet.params(section)

    # -- act -------------------------------------------------------------------------------------
    async def act(command: Command, args: dict[str, str], me: Identity) -> Answers:
        return await fleet.command(command, args, me.who)

    @api.post("/api/kill", responses=acting)
    async def kill(me: Operator, body: KillIn | None = None) -> Answers:
        flatten = body.flatten if body is not None else False
        return await act("kill", {"flatten": "true" if flatten else "false"}, me)

    @api.post("/api/resume", responses=acting)
    async def resume(me: Operator) -> Answers:
        return await act("resume", {}, me)

    @api.post("/api/mode", responses=acting)
    async def mode(me: Operator, body: ModeIn) -> Answers:
        return await act("set_mode", {"mode": body.mode}, me)

    @api.post("/api/flatten", responses=acting)
    async def flatten(me: Operator) -> Answers:
        return await act("flatten", {}, me)

    @api.post("/api/orders/{client_order_id}/cancel", responses=acting)
    async def cancel(me: Operator, client_order_id: Annotated[str, _order_id()]) -> Answers:
        return await act("cancel", {"client_order_id": client_order_id}, me)

    @api.post("/api/orders/{client_order_id}/replace", responses={**acting, 422: {"description": "nothing"}})
    async def replace(me: Operator, client_order_id: Annotated[str, _order_id()], body: ReplaceIn) -> Answers:
        args = {"client_order_id": client_order_id}
        if body.quantity is not None:
            args["quantity"] = repr(body.quantity)
        if body.limit_price is not None:
            args["limit_price"] = repr(body.limit_price)
        if len(args) == 1:
            raise HTTPException(422, "replace needs quantity and/or limit_price")
        return await act("replace", args, me)

    @api.post("/api/strategy/stop", responses=acting)
    async def strategy_stop(me: Operator, body: StrategyIn | None = None) -> ParamsAnswer:
        return await _strategy(False, body.symbol if body is not None else None, me)

    @api.post("/api/strategy/start", responses=acting)
    async def strategy_start(me: Operator, body: StrategyIn | None = None) -> ParamsAnswer:
        return await _strategy(True, body.symbol if body is not None else None, me)

    async def _strategy(on: bool, symbol: str | None, me: Identity) -> ParamsAnswer:
        """QOS entries off/on for one symbol or all ("*"): the live qos.entries_off."""
        off = set(fleet.params("qos")["values"]["entries_off"])
        key = symbol.upper() if symbol else "*"
        if on and key == "*":
            off.clear()  # starting all starts every symbol
        elif on:
            off.discard(key)
        else:
            off.add(key)
        return await fleet.change_params("qos", {"entries_off": sorted(off)}, me.who)

    @api.put("/api/params/{section}", responses={**acting, 422: {"description": "field errors"}})
    async def put_params(me: Admin, section: ConfigSection, body: ParamsIn) -> ParamsAnswer:
        try:
            return await fleet.change_params(section, body.values, me.who)
        except ValidationError as exc:
            detail = [
                {"loc": ["values", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors()
            ]
            raise HTTPException(422, detail) from None

    @api.post("/api/signal", status_code=202, responses=acting)
    async def signal(me: Operator, body: SignalIn) -> dict[str, str]:
        return {"accepted": await fleet.signal(body, me.who)}

    # -- live -----------------------------------------------------------------------------------
    @api.websocket("/api/ws")
    async def ws(socket: WebSocket, token: str | None = None) -> None:
        ident = tokens.identify(token or bearer(socket.headers.get("authorization")))
        address = socket.client.host if socket.client else "unknown"
        if ident is None:
            limiter.hit(anonymous, "anon", address)  # guesses count here as on every route
            await socket.close(code=4401, reason="a valid token is needed")
            return
        if not limiter.hit(per_kind["read"], "read", ident.name):
            await socket.close(code=4429, reason="rate limited: connect again later")
            return
        await socket.accept()
        queue = fleet.subscribe()
        reader = asyncio.create_task(_drain(socket))
        try:
            while True:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    getter.cancel()
                    return
                message = getter.result()
                if message is None:  # dropped: too far behind
                    await socket.close(code=1013, reason="too slow: reconnect for a fresh snapshot")
                    return
                if message == GOING_AWAY:
                    await socket.close(code=1001, reason="the control service is stopping")
                    return
                await socket.send_text(message)  # JSON, encoded once for every client
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            fleet.unsubscribe(queue)
            reader.cancel()

    @api.exception_handler(ValidationError)
    async def _invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": exc.errors(include_url=False)})

    _serve_dashboard(api, web_dir)
    return api


def _order_id() -> Any:
    from fastapi import Path as PathParam

    return PathParam(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")


async def _drain(socket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a close is noticed."""
    with contextlib.suppress(Exception):
        while True:
            await socket.receive_text()


def _since(text: str, now: dt.datetime) -> dt.datetime:
    units = {"m": 60, "h": 3600, "d": 86400}
    if text.startswith("-") and text[-1:] in units and text[1:-1].isdigit():
        return now - dt.timedelta(seconds=int(text[1:-1]) * units[text[-1]])
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(422, f"since: {text!r} is not -30m, -2h, -1d or ISO 8601") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _serve_dashboard(api: FastAPI, web_dir: Path | None) -> None:
    if web_dir is not None and (web_dir / "index.html").exists():
        api.mount("/", StaticFiles(directory=web_dir, html=True), name="dashboard")
        return

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def not_built() -> str:
        return (
            "<!doctype html><title>tradefleet</title><p>The dashboard is not built here "
            "(<code>make web</code> builds web/dist). The API is at <a href='/api/docs'>/api/docs</a>.</p>"
        )


__all__ = ["CONFIG_SECTIONS", "Answers", "Fleet", "ParamsAnswer", "SignalIn", "build_api"]
