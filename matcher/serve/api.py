"""The HTTP API (FastAPI). Thin: parse, authenticate, call the dispatcher, answer.

Errors are JSON objects ``{"error": CODE, "message": TEXT, ...}``: 401 without or with a
bad token, 403 for the wrong role or subject, 404 for an unknown ride or offer, 409
with ``state`` (the ride's current state) for an illegal transition, 422 with
``detail`` (the field errors) for a body that fails validation, 503 when the journal
cannot be written. A call that changes a ride answers only once the change is durable.

``make_app(dispatcher, auth)`` builds the app; tests drive it with FastAPI's TestClient,
``matcher serve`` runs it under Ray Serve (:mod:`matcher.serve.app`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
from fastapi import FastAPI, Header, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError

from matcher.serve import metrics_text
from matcher.serve.auth import Authenticator, AuthError
from matcher.serve.dispatcher import Dispatcher, DispatchError, Unavailable
from matcher.serve.ingest import REPORTED
from matcher.serve.models import LocationBatch, LocationUpdate, MatchQuery, RideRequest, RideStatusUpdate
from matcher.serve.pacing import pacer

Auth = Annotated[str | None, Header(alias="Authorization")]
_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict", 422: "invalid", 503: "unavailable"}
_REPORTED_CODE = {s: i for i, s in enumerate(REPORTED)}
ARROW_TYPES = ("application/vnd.apache.arrow.stream", "application/vnd.apache.arrow.file")


class _BodyError(Exception):
    def __init__(self, errors: list):
        self.errors = errors


def _body(model, raw: bytes):
    """Validate a JSON body after authentication (a 401 comes before a 422)."""
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as e:
        raise _BodyError(jsonable_encoder(e.errors(include_url=False), exclude={"input", "ctx"})) from None


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": _CODES.get(status, "error"), "message": message, **extra}, status_code=status)


async def _durable(call: Callable[[Callable[[BaseException | None], None]], Any]) -> Any:
    """Run ``call(callback)``; answer once the journal has committed (the callback ran)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    def settle(err: BaseException | None) -> None:
        if not fut.done():
            fut.set_result(err)

    result = call(lambda err: loop.call_soon_threadsafe(settle, err))
    err = await fut
    if err is not None:
        raise Unavailable(f"the journal cannot be written ({type(err).__name__})")
    return result


def _live() -> dict[str, Any]:
    from matcher.serve import registry  # imported at call time: the replica's module, not a pickled copy

    return registry.LIVE


def make_app(dispatcher: Dispatcher | None = None, auth: Authenticator | None = None) -> FastAPI:
    app = FastAPI(title="matcher live dispatch", version="1", docs_url="/docs", redoc_url=None)
    app.state.dispatcher, app.state.auth = dispatcher, auth

    def ctx(request: Request) -> tuple[Dispatcher, Authenticator]:
        d, a = request.app.state.dispatcher, request.app.state.auth
        if d is None or a is None:
            live = _live()
            d, a = live.get("dispatcher"), live.get("auth")
        if d is None or a is None:
            raise Unavailable("the service is starting")
        return d, a

    @app.exception_handler(AuthError)
    async def _auth_error(request: Request, e: AuthError):
        return _error(e.status, e.message)

    @app.exception_handler(DispatchError)
    async def _dispatch_error(request: Request, e: DispatchError):
        return _error(e.status, e.message, **e.extra)

    @app.exception_handler(_BodyError)
    async def _body_error(request: Request, e: _BodyError):
        return _error(422, "the request failed validation", detail=e.errors)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return _error(422, "the request failed validation", detail=jsonable_encoder(e.errors(), exclude={"input"}))

    @app.get("/healthz")
    async def healthz(request: Request):
        d, _ = ctx(request)
        return {"status": "ok", "tick": d.k, "searching": len(d.searching), "drivers": len(d.driver_ids)}

    @app.get("/metrics")
    async def prometheus(request: Request):
        d, _ = ctx(request)
        return PlainTextResponse(metrics_text.render(d), media_type="text/plain; version=0.0.4")

    @app.post("/v1/rides/request")
    async def request_ride(
        request: Request,
        authorization: Auth = None,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
    ):
        d, a = ctx(request)
        c = a.require(authorization, "rider")
        body = _body(RideRequest, await request.body())
        return await _durable(lambda cb: d.request_ride(c.sub, body, idempotency_key, cb))

    @app.get("/v1/rides/{ride_id}")
    async def get_ride(ride_id: str, request: Request, authorization: Auth = None):
        d, a = ctx(request)
        c = a.require(authorization, "rider", "driver", "service")
        return d.get_ride(ride_id, c.role, c.sub)

    @app.post("/v1/rides/{ride_id}/cancel")
    async def cancel(ride_id: str, request: Request, authorization: Auth = None):
        d, a = ctx(request)
        c = a.require(authorization, "rider", "service")
        return await _durable(lambda cb: d.cancel(ride_id, c.role, c.sub, cb))

    @app.put("/v1/rides/{ride_id}/status")
    async def ride_status(ride_id: str, request: Request, authorization: Auth = None):
        d, a = ctx(request)
        c = a.require(authorization, "driver")
        body = _body(RideStatusUpdate, await request.body())
        k = d.driver_key(c.sub, c.vehicle, c.rating)
        return await _durable(lambda cb: d.ride_status(ride_id, k, body.status, cb))

    @app.put("/v1/drivers/location")
    async def location(request: Request, authorization: Auth = None):
        d, a = ctx(request)
        c = a.require(authorization, "driver")
        body = _body(LocationUpdate, await request.body())
        k = d.driver_key(c.sub, c.vehicle, c.rating)
        d.ping_one(k, body.lat, body.lng, body.heading, body.speed_mps, _REPORTED_CODE[body.status])
        return {"status": "ok"}

    @app.put("/v1/drivers/locations")
    async def locations(request: Request, authorization: Auth = None):
        d, a = ctx(request)
        a.require(authorization, "service")
        raw = await request.body()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            cols = _arrow_columns(raw) if ctype in ARROW_TYPES else _json_columns(raw)
        except (ValueError, pa.ArrowException) as e:
            return _error(422, f"the batch failed validation: {e}")
        status = cols.get("status")
        rep = None if status is None else np.array([_REPORTED_CODE.get(s, -1) for s in status], np.int8)
        return d.ping_batch(
            cols["driver_id"], cols["lat"], cols["lng"], cols.get("heading"), cols.get("speed_mps"), rep,
            cols.get("vehicle"), cols.get("rating"),
        )  # fmt: skip

    @app.get("/v1/drivers/offer")
    async def offer(
        request: Request,
        authorization: Auth = None,
        wait_s: Annotated[float, Query(ge=0, le=60, allow_inf_nan=False)] = 0.0,
    ):
        d, a = ctx(request)
        c = a.require(authorization, "driver")
        k = d.driver_key(c.sub, c.vehicle, c.rating)
        if wait_s <= 0:
            got = d.current_offer(k)
        else:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future = loop.create_future()

            def settle(o: dict) -> None:
                if not fut.done():
                    fut.set_result(o)

            def notify(o: dict) -> None:
                pace.put(settle, o)  # a tick wakes many polls: a few per loop turn (matcher.serve.pacing)

            pace = pacer(loop)

            got = d.wait_offer(k, notify)
            if got is None:
                try:
                    got = await asyncio.wait_for(fut, min(wait_s, d.cfg.long_poll_s))
                except TimeoutError:
                    got = None
                finally:
                    d.cancel_wait(k, notify)
        return Response(status_code=204) if got is None else got

    @app.post("/v1/offers/{offer_id}/accept")
    async def accept(offer_id: str, request: Request, authorization: Auth = None):
        d, a = ctx(request)
        c = a.require(authorization, "driver")
        k = d.driver_key(c.sub, c.vehicle, c.rating)
        return await _durable(lambda cb: d.answer_offer(offer_id, k, True, cb))

    @app.post("/v1/offers/{offer_id}/decline")
    async def decline(offer_id: str, request: Request, authorization: Auth = None):
        d, a = ctx(request)
        c = a.require(authorization, "driver")
        k = d.driver_key(c.sub, c.vehicle, c.rating)
        return await _durable(lambda cb: d.answer_offer(offer_id, k, False, cb))

    @app.post("/v1/dispatch/match")
    async def match(request: Request, authorization: Auth = None):
        d, a = ctx(request)
        a.require(authorization, "service")
        body = _body(MatchQuery, await request.body())
        return {
            "ride_id": body.ride_id,
            "candidate_drivers": d.candidates(body.ride_id, body.pickup_lat, body.pickup_lng, body.ride_type),
        }

    return app


def _json_columns(raw: bytes) -> dict:
    b = _body(LocationBatch, raw)
    return {k: v for k, v in b.model_dump().items() if v is not None}


def _arrow_columns(raw: bytes) -> dict:
    """An Arrow IPC stream with the batch's columns (driver_id, lat, lng required)."""
    t = pa.ipc.open_stream(pa.py_buffer(raw)).read_all()
    missing = [c for c in ("driver_id", "lat", "lng") if c not in t.column_names]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    out: dict = {"driver_id": t.column("driver_id").cast(pa.string()).to_pylist()}
    if any(x is None for x in out["driver_id"]):
        raise ValueError("driver_id has nulls")
    for c in ("lat", "lng", "heading", "speed_mps", "rating"):
        if c in t.column_names:
            out[c] = t.column(c).cast(pa.float64()).fill_null(float("nan")).to_numpy()
    for c in ("status", "vehicle"):
        if c in t.column_names:
            out[c] = t.column(c).cast(pa.string()).to_pylist()
    return out
