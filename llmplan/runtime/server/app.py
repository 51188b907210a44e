"""The OpenAI-compatible FastAPI app around one :class:`AsyncEngine`.

``create_app(engine)`` is all a caller needs: the app starts the engine in its lifespan
and drains it on shutdown. It depends only on the engine protocol, so the torch engine,
a test engine or a remote adapter all serve the same API.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from llmplan.runtime.engine.api import AsyncEngine, GenerateRequest
from llmplan.runtime.server.chat import has_chat_template, render_chat
from llmplan.runtime.server.errors import APIError, install_error_handlers, parse_body, sse_error
from llmplan.runtime.server.guard import GuardConfig, install_guard
from llmplan.runtime.server.metrics import CONTENT_TYPE, ServerMetrics
from llmplan.runtime.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    resolve_max_tokens,
    sampling_params,
)
from llmplan.runtime.server.session import RequestSession
from llmplan.runtime.server.sse import DONE, sse
from llmplan.workload.types import SLO

T = TypeVar("T")


@dataclass
class ServerState:
    """Shared between the app and the process runner (which flips ``draining`` on SIGTERM)."""

    engine: AsyncEngine
    model_name: str
    metrics: ServerMetrics
    created: int
    draining: bool = False

    def check_accepting(self) -> None:
        if self.draining:
            self.metrics.outcome("draining")
            raise APIError(503, "the server is shutting down; send the request to another instance",
                           headers={"Retry-After": "5"})

    def check_model(self, model: str | None) -> None:
        # Omitted is fine (one model per server); a different name is a mistake worth reporting.
        if model and model != self.model_name:
            raise APIError(404, f"model '{model}' is not served here; use '{self.model_name}' "
                           "(see GET /v1/models)", param="model")


def _vocab_size(engine: AsyncEngine) -> int | None:
    for owner in (engine, engine.tokenizer):
        size = getattr(owner, "vocab_size", None)
        if isinstance(size, int) and size > 0:
            return size
    return None


def _encode(engine: AsyncEngine, text: str, add_bos: bool) -> list[int]:
    ids = list(engine.tokenizer.encode(text))
    bos = getattr(engine.tokenizer, "bos_token_id", None)
    if add_bos and bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return ids


def _tokenize(state: ServerState, prompt: str | list[int], add_bos: bool) -> tuple[list[int], str | None]:
    """Text is tokenized here; token ids are taken as they are (exact lengths for benchmarks)."""
    if isinstance(prompt, str):
        return _encode(state.engine, prompt, add_bos), prompt
    vocab = _vocab_size(state.engine)
    if vocab is not None:
        bad = next((t for t in prompt if t >= vocab), None)
        if bad is not None:
            raise APIError(400, f"token id {bad} in 'prompt' is outside the vocabulary (0..{vocab - 1})",
                           param="prompt")
    return list(prompt), None


# Prompts above this many characters (or token ids) are tokenized on a small thread pool of
# their own, so a huge prompt never stalls the event loop (every other stream) while it is
# tokenized, and never occupies the threads that small prompts would wait for.
_INLINE_PROMPT = 1 << 15
_POOL: ThreadPoolExecutor | None = None


def _prompt_size(prompt: object) -> int:
    return len(prompt) if isinstance(prompt, str | list) else 0


async def _off_loop(size: int, fn: Callable[..., T], *args: Any) -> T:
    global _POOL
    if size <= _INLINE_PROMPT:
        return fn(*args)
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="llmplan-tokenize")
    return await asyncio.get_running_loop().run_in_executor(_POOL, lambda: fn(*args))


def _chat_ids(engine: AsyncEngine, messages: list[dict[str, str]], add_generation_prompt: bool
              ) -> tuple[str, list[int]]:
    text = render_chat(engine.tokenizer, messages, add_generation_prompt)
    # A real chat template writes BOS into the text itself; the plain one does not.
    return text, _encode(engine, text, add_bos=not has_chat_template(engine.tokenizer))


def _slo(body: CompletionRequest | ChatCompletionRequest) -> SLO:
    return SLO(ttft_s=body.slo_ttft_s, tpot_s=body.slo_tpot_s, e2e_s=body.slo_e2e_s)


def create_app(  # noqa: C901 - the routes are closures over the engine state; the figure is their sum, each route is short
    engine: AsyncEngine, *, served_model_name: str | None = None, guard: GuardConfig | None = None
) -> FastAPI:
    """The app; ``guard`` sets its API key, admin switch and request limits (defaults: no key,
    admin endpoints off, 8 MiB bodies)."""
    state = ServerState(
        engine=engine,
        model_name=served_model_name or engine.model_name,
        metrics=ServerMetrics(engine.stats, served_model_name or engine.model_name),
        created=int(time.time()),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            # uvicorn has already waited for open responses; this finishes whatever remains.
            state.draining = True
            await engine.shutdown(drain=True)

    # Collectors an engine brings for /metrics (e.g. the KV store's, from build_engine(kv_store=...)).
    for collector in getattr(engine, "metric_collectors", None) or ():
        state.metrics.registry.register(collector)
    from llmplan.energy.metrics import EnergyCollector

    state.metrics.registry.register(EnergyCollector())  # joules (NVML / RAPL) or "modelled only"

    app = FastAPI(title="llmplan serve", version="1", lifespan=lifespan)
    app.state.llmplan = state
    install_error_handlers(app)
    # Multi-worker instances: POST /admin/migrate, GET /admin/workers, workers stopped after the drain.
    from llmplan.runtime.server.workers_admin import install_admin

    install_admin(app, engine)
    install_guard(app, guard if guard is not None else GuardConfig())
    _document_bodies(app)

    @app.get("/health")
    async def health() -> Response:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        s = engine.stats()
        return JSONResponse({"status": "ok", "waiting": s.waiting, "running": s.running})

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{
                "id": state.model_name,
                "object": "model",
                "created": state.created,
                "owned_by": "llmplan",
                "max_model_len": engine.max_model_len,
                # llmplan extension: lets a benchmark client synthesize valid token-id prompts.
                "vocab_size": _vocab_size(engine),
            }],
        }

    @app.get("/v1/deployment")
    async def deployment() -> Response:
        """The deployment this server runs (llmplan.deployment.DeploymentSpec): model, KV pool,
        scheduler settings. ``llmplan bench --target URL --simulate`` simulates exactly this."""
        spec = getattr(engine, "deployment", None)
        if not spec:
            raise APIError(404, "this engine does not describe its deployment; build it with build_engine")
        return JSONResponse(spec)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/completions")
    async def completions(raw: Request) -> Response:
        state.check_accepting()
        try:
            body = parse_body(CompletionRequest, await raw.body())
            body.check_supported()
            state.check_model(body.model)
            prompt = body.single_prompt()
            add_bos = body.add_special_tokens
            ids, text = await _off_loop(_prompt_size(prompt), _tokenize, state, prompt, add_bos)
            max_tokens = resolve_max_tokens(body.max_tokens, len(ids), engine.max_model_len, "max_tokens")
        except APIError:
            state.metrics.outcome("bad_request")
            raise
        req = GenerateRequest(f"cmpl-{uuid.uuid4().hex}", ids, sampling_params(body, max_tokens),
                              _slo(body), prompt=text)
        session = RequestSession(engine, req, raw, state.metrics)
        if not await session.admit():
            return Response(status_code=499)  # nginx's 'client closed request'; nobody reads it
        created = int(time.time())

        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            return {"id": req.request_id, "object": "text_completion", "created": created,
                    "model": state.model_name,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

        if body.stream:
            return _streaming(session, body, chunk, "text_completion")

        pieces = [out.new_text async for out in session.outputs()]
        if session.client_gone:
            return Response(status_code=499)
        if session.error:
            raise APIError(500, session.error)
        result = chunk("".join(pieces), _finish(session.finish_reason))
        result["usage"] = session.usage.as_dict()
        return JSONResponse(result)

    @app.post("/v1/chat/completions")
    async def chat_completions(raw: Request) -> Response:
        state.check_accepting()
        try:
            body = parse_body(ChatCompletionRequest, await raw.body())
            body.check_supported()
            state.check_model(body.model)
            messages = body.plain_messages()
            size = sum(len(m["content"]) for m in messages)
            text, ids = await _off_loop(size, _chat_ids, engine, messages, body.add_generation_prompt)
            field = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
            max_tokens = resolve_max_tokens(
                body.requested_max_tokens(), len(ids), engine.max_model_len, field
            )
        except APIError:
            state.metrics.outcome("bad_request")
            raise
        req = GenerateRequest(f"chatcmpl-{uuid.uuid4().hex}", ids, sampling_params(body, max_tokens),
                              _slo(body), prompt=text)
        session = RequestSession(engine, req, raw, state.metrics)
        if not await session.admit():
            return Response(status_code=499)  # nginx's 'client closed request'; nobody reads it
        created = int(time.time())

        def chunk(delta: dict[str, str], finish: str | None) -> dict[str, Any]:
            return {"id": req.request_id, "object": "chat.completion.chunk", "created": created,
                    "model": state.model_name,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        if body.stream:
            return _streaming(
                session, body, lambda text, finish: chunk({"content": text} if text else {}, finish),
                "chat.completion.chunk", lead=chunk({"role": "assistant", "content": ""}, None),
            )

        pieces = [out.new_text async for out in session.outputs()]
        if session.client_gone:
            return Response(status_code=499)
        if session.error:
            raise APIError(500, session.error)
        return JSONResponse({
            "id": req.request_id, "object": "chat.completion", "created": created, "model": state.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                         "logprobs": None, "finish_reason": _finish(session.finish_reason)}],
            "usage": session.usage.as_dict(),
        })

    return app


def _document_bodies(app: FastAPI) -> None:
    """The handlers read their bodies raw (any Content-Type, one error shape); the OpenAPI
    document still describes them, from the same pydantic models that validate them, so
    clients and schema-driven fuzzers (tests/server/test_server_fuzz.py) see the real contract."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for path, model in (("/v1/completions", CompletionRequest),
                                ("/v1/chat/completions", ChatCompletionRequest)):
                js = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(js.pop("$defs", {}))
                schemas[model.__name__] = js
                ref = {"$ref": f"#/components/schemas/{model.__name__}"}
                doc["paths"][path]["post"]["requestBody"] = {
                    "required": True, "content": {"application/json": {"schema": ref}}}
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _streaming(
    session: RequestSession,
    body: CompletionRequest | ChatCompletionRequest,
    make_chunk: Callable[[str, str | None], dict[str, Any]],
    obj: str,
    lead: dict[str, Any] | None = None,
) -> StreamingResponse:
    every = body.usage_on_every_chunk()

    async def events() -> AsyncIterator[bytes]:
        if lead is not None:
            yield sse(lead)
        async for out in session.outputs():
            # One chunk per engine increment that carried tokens, even when their text is
            # empty (held back for a stop string, or a special token): clients count chunks.
            if not (out.new_token_ids or out.new_text or out.finished):
                continue
            if out.finished and session.error and not out.new_text:
                break
            c = make_chunk(out.new_text, _finish(out.finish_reason) if out.finished else None)
            if every:
                c["usage"] = session.usage.as_dict()
            yield sse(c)
        if session.error:
            yield sse_error(500, session.error)
        elif body.include_usage_in_stream():
            yield sse({"id": session.rid, "object": obj, "created": int(time.time()),
                       "model": session.metrics.model, "choices": [], "usage": session.usage.as_dict()})
        yield DONE

    return StreamingResponse(events(), media_type="text/event-stream", headers=_SSE_HEADERS)


# Proxies (nginx) buffer SSE unless told not to; clients must not cache a stream.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _finish(reason: str | None) -> str:
    # OpenAI clients know "stop" and "length"; an abort only reaches a client that is gone.
    return reason if reason in ("stop", "length", "abort") else "stop"


def state_of(app: FastAPI) -> ServerState:
    return app.state.llmplan


__all__ = ["ServerState", "create_app", "state_of"]
