"""The HTTP service: a thin FastAPI layer over `ServiceState` (all logic lives there).

    from clip4rec.serve.app import create_app
    app = create_app(ServiceState.from_run("artifacts/demo/report/runs/loo/fused-id/seed42"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)   -- or: clip4rec serve RUN

Endpoints: POST /recommend, GET /items/{id}/similar, POST /items (live cold start), GET /items/{id},
GET /items/{id}/image, GET /items, GET /users, GET /users/{id}, GET /health, GET /metrics, GET / (the page),
OpenAPI at /docs and /openapi.json. Ids only, never file paths: images are streamed by item id from the
paths the Dataset recorded.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from fastapi import Body, FastAPI, HTTPException, Query, Response
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from clip4rec import __version__
from clip4rec.serve.batcher import Batcher
from clip4rec.serve.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from clip4rec.serve.schemas import (MAX_ID, ItemInfo, Page, PublishRequest, PublishResponse, RecommendRequest,
                                    RecommendResponse, SimilarResponse, UserHistory, UsersPage)
from clip4rec.serve.state import ServeError, ServiceState

STATIC = Path(__file__).parent / "static"


# ---- ASGI pieces --------------------------------------------------------------------------------------------
class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyLimitMiddleware:
    """413 for bodies over the limit: by Content-Length up front, or counted while streaming (chunked)."""

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False  # the server rejects a malformed Content-Length itself
            if too_big:
                response = JSONResponse({"detail": f"request body larger than {self.max_bytes} bytes"}, 413)
                await response(scope, receive, send)
                return
        seen = 0

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def create_app(state: ServiceState, max_batch: int = 16) -> FastAPI:
    app = FastAPI(title="clip4rec", version=__version__,
                  description="Sequential recommendation over a precomputed item table: one user-tower pass and "
                              "one top-k per request. Items can be added live from their encoder vectors.")
    metrics = Metrics()
    batcher = Batcher(state, max_batch)
    metrics.gauges({"items": ("Items in the served catalog.", lambda: state.snapshot.n),
                    "published_items": ("Items added through POST /items.", lambda: len(state.published)),
                    "recommend_batches": ("Batches run by the /recommend batcher.", lambda: batcher.batches),
                    "recommend_batched_requests": ("Requests answered through those batches.",
                                                   lambda: batcher.requests)})
    app.state.service, app.state.metrics, app.state.batcher = state, metrics, batcher
    app.add_middleware(BodyLimitMiddleware, max_bytes=state.limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last = outermost: times everything
    _error_handlers(app)
    _recommend_route(app, state, batcher)
    _item_routes(app, state)
    _user_routes(app, state)
    _service_routes(app, state, metrics)
    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_, err: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, and a NaN in it would make the 422 itself fail (a 500).
        return JSONResponse({"detail": _json_safe(jsonable_encoder(err.errors()))}, status_code=422)

    @app.exception_handler(ServeError)
    async def _serve_error(_, err: ServeError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=err.status)


def _recommend_route(app: FastAPI, state: ServiceState, batcher: Batcher) -> None:
    examples = recommend_examples(state)

    @app.post("/recommend", response_model=RecommendResponse, tags=["recommend"])
    # Body(...) as a default, not in Annotated: the annotation is a string here (postponed evaluation) and
    # `examples` is local, so FastAPI could not resolve it.
    async def recommend(request: RecommendRequest = Body(openapi_examples=examples)) -> dict[str, Any]:
        """Top-k items for a user or a history (one user-tower pass + one top-k over the item table).

        Ids may be sent as JSON integers; they are strings in the catalog. With `user_id`, the user's
        interactions in the Run's Dataset are the history (then `history`, if also given)."""
        t0 = time.perf_counter()
        history, from_user = state.history_for(request.user_id, request.history)
        out = await batcher.submit(history, request.k, request.exclude_seen)
        out.update(user_id=request.user_id, history_from_user=from_user,
                   took_ms=round((time.perf_counter() - t0) * 1000, 3))
        return out


def _item_routes(app: FastAPI, state: ServiceState) -> None:
    def _item_or_404(item_id: str) -> int:
        i = state.lookup(item_id)
        if i is None:
            raise ServeError(f"unknown item id {item_id!r}", 404)
        return i

    @app.get("/items/{item_id}/similar", response_model=SimilarResponse, tags=["items"])
    def similar(item_id: Annotated[str, PathParam(max_length=MAX_ID)],
                by: Literal["image", "text", "fused"] = "fused",
                k: Annotated[int, Query(ge=1, le=1000)] = 10) -> dict[str, Any]:
        """Nearest items by cosine: image or text encoder vectors from the store, or the Run's fused vectors."""
        return state.similar_items(item_id, by, k)

    @app.post("/items", response_model=PublishResponse, tags=["items"],
              responses={201: {"model": PublishResponse, "description": "item added"},
                         409: {"description": "this Run has no content path (variant id)"}})
    def publish(request: PublishRequest, response: Response) -> dict[str, Any]:
        """Add or update an item from its offline encoder vectors; recommendable as soon as this returns."""
        out = state.publish(request.item_id, request.vectors, request.title)
        response.status_code = 201 if out["created"] else 200
        return out

    @app.get("/items", response_model=Page, tags=["items"])
    def list_items(offset: Annotated[int, Query(ge=0)] = 0,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        n = state.snapshot.n
        return {"total": n, "offset": offset, "ids": state.item_ids[min(offset, n): min(offset + limit, n)]}

    @app.get("/items/{item_id}", response_model=ItemInfo, tags=["items"])
    def item(item_id: Annotated[str, PathParam(max_length=MAX_ID)]) -> dict[str, Any]:
        return state.item_info(_item_or_404(item_id))

    @app.get("/items/{item_id}/image", tags=["items"], response_class=FileResponse,
             responses={200: {"content": {"image/*": {}}}, 404: {"description": "no image for this item"}})
    def image(item_id: Annotated[str, PathParam(max_length=MAX_ID)]) -> FileResponse:
        """The item's image file as the Dataset references it (by id only; no paths are accepted)."""
        path = state.images[_item_or_404(item_id)]
        if path is None or not Path(path).is_file():
            raise ServeError(f"item {item_id!r} has no image", 404)
        return FileResponse(path, headers={"Cache-Control": "max-age=3600"})


def _user_routes(app: FastAPI, state: ServiceState) -> None:
    @app.get("/users", response_model=UsersPage, tags=["users"])
    def users(offset: Annotated[int, Query(ge=0)] = 0,
              limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        chosen = state.user_ids[offset: offset + limit]
        return {"total": len(state.user_ids), "offset": offset,
                "users": [{"user_id": u, "interactions": len(state.users[u])} for u in chosen]}

    @app.get("/users/{user_id}", response_model=UserHistory, tags=["users"])
    def user(user_id: Annotated[str, PathParam(max_length=MAX_ID)]) -> dict[str, Any]:
        if user_id not in state.users:
            raise ServeError(f"unknown user id {user_id!r}", 404)
        return {"user_id": user_id, "history": state.users[user_id][-state.limits.max_history:]}


def _service_routes(app: FastAPI, state: ServiceState, metrics: Metrics) -> None:
    @app.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        return state.health()

    @app.get("/metrics", response_class=PlainTextResponse, tags=["service"])
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def recommend_examples(state: ServiceState) -> dict[str, dict[str, Any]]:
    """OpenAPI examples for /recommend made from the served catalog: a real user's last items, the same ids as
    JSON numbers where they are numeric (MovieLens), and the user by id."""
    user = next((u for u in state.user_ids if state.users[u]), None)
    history = state.users[user][-3:] if user is not None else state.item_ids[:3]
    examples: dict[str, dict[str, Any]] = {
        "history": {"summary": "a history of catalog ids, oldest first", "value": {"history": history, "k": 10}}}
    if history and all(i.isdigit() and str(int(i)) == i for i in history):
        examples["numbers"] = {"summary": "the same ids as JSON numbers (read as strings)",
                               "value": {"history": [int(i) for i in history], "k": 10}}
    if user is not None:
        examples["user"] = {"summary": "a known user: history from the Run's Dataset",
                            "value": {"user_id": user, "k": 10}}
    return examples


def serve(state: ServiceState, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          max_batch: int = 16) -> None:
    import uvicorn
    uvicorn.run(create_app(state, max_batch), host=host, port=port, log_level=log_level, access_log=False)
