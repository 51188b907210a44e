"""Operator endpoints of a multi-worker instance, installed by the server's ``create_app`` (HTTP code:
it lives in the server package, which the workers never import).

``POST /admin/migrate {"layers": [3], "src": 0, "dst": 1}`` moves boundary layers (weights and
the KV blocks in use) between adjacent workers between two engine steps, while requests stream;
the reply is the migration's record (bytes, measured seconds beside the estimate S/B + T_sync)
and the new stage map. An invalid move is a 409 naming the movable layers; a server with one
worker answers 409 too. ``POST /admin/offload {"layers": [1], "src": 0, "dst": 1, "kv_heads": 1}``
is the attention-level migration: the last ``kv_heads`` KV heads of each layer (with their query
groups and KV in use) go to worker ``dst``, which computes their attention from then on;
``POST /admin/restore {"layers": [1]}`` (or ``{}`` for all) takes them back. ``GET /admin/workers``
shows the stage map, the probed links, the offloaded heads and the migrations so far. Once a
worker has failed, ``/health`` answers 503 ``{"status": "failed"}``.

The workers are stopped after the engine has drained, from the app's lifespan.
"""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from llmplan.errors import LlmplanError


def pipeline_executor(engine: Any):
    """The engine's PipelineExecutor, or None (a single-worker engine, a test engine).

    Without a PipelineExecutor its module (and torch) was never imported: a server around a
    remote or stub engine does not pay for that import here."""
    mod = sys.modules.get("llmplan.runtime.workers.executor")
    ex = getattr(getattr(engine, "engine", None), "executor", None)
    return ex if mod is not None and isinstance(ex, mod.PipelineExecutor) else None


_EXAMPLE = '{"layers": [3], "src": 0, "dst": 1}'
_OFFLOAD_EXAMPLE = '{"layers": [1], "src": 0, "dst": 1, "kv_heads": 1}'


def _offloads(executor) -> list[dict[str, int]]:
    return [{"layer": i, "owner": o.owner, "host": o.host, "kv_heads": o.kv_heads}
            for i, o in sorted(executor.offloads.items())]


def _int_list(v: Any) -> list[int] | None:
    if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return None
    return v


def install_admin(app, engine) -> None:  # noqa: C901 - the admin routes are closures over the executor; the figure is their sum
    from llmplan.runtime.server.errors import APIError

    executor = pipeline_executor(engine)
    if executor is not None:
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(a):
            try:
                async with inner(a) as value:
                    yield value
            finally:
                await asyncio.to_thread(executor.close)  # the engine has drained: stop the workers

        app.router.lifespan_context = lifespan

        @app.middleware("http")
        async def failed_instance_health(request: Request, call_next):
            # A failed instance cannot serve until restarted: /health says so, so a load balancer
            # or llmplan's front end stops sending it requests.
            if request.url.path == "/health" and executor.failed:
                return JSONResponse({"status": "failed", "error": executor.failed}, status_code=503)
            return await call_next(request)

    async def body_of(raw: Request, example: str) -> dict:
        try:
            body = json.loads(await raw.body() or b"null")
        except ValueError:
            raise APIError(400, f"the body is not valid JSON; send {example}") from None
        if not isinstance(body, dict):
            raise APIError(400, f"send a JSON object {example}")
        return body

    def layers_of(body: dict, required: bool = True) -> list[int] | None:
        if not required and body.get("layers") is None:
            return None
        layers = _int_list(body.get("layers"))
        if layers is None:
            raise APIError(400, "'layers' must be a non-empty list of layer indices, e.g. [3]",
                           param="layers")
        return layers

    def ints(body: dict, what: dict[str, str]) -> None:
        for key, meaning in what.items():
            if not isinstance(body.get(key), int) or isinstance(body.get(key), bool):
                raise APIError(400, f"'{key}' must be {meaning} (an integer)", param=key)

    async def run(what: str, fn, *args):
        if executor is None:
            raise APIError(409, f"this server runs one worker; {what} needs "
                           "`llmplan serve --workers N` with N >= 2")
        from llmplan.runtime.workers.pool import WorkerFailure

        try:
            return await asyncio.to_thread(fn, *args)
        except WorkerFailure as e:
            raise APIError(500, str(e)) from None
        except LlmplanError as e:
            raise APIError(409, f"{e}; the stage map is {executor.ranges}") from None

    @app.post("/admin/migrate")
    async def admin_migrate(raw: Request) -> JSONResponse:
        body = await body_of(raw, _EXAMPLE)
        layers = layers_of(body)
        ints(body, {"src": "a worker rank", "dst": "a worker rank"})
        rec = await run("layer migration", executor and executor.migrate, layers, body["src"], body["dst"],
                        "admin")
        return JSONResponse({"migration": rec.as_dict(), "layers": [list(r) for r in executor.ranges]})

    @app.post("/admin/offload")
    async def admin_offload(raw: Request) -> JSONResponse:
        body = await body_of(raw, _OFFLOAD_EXAMPLE)
        layers = layers_of(body)
        ints(body, {"src": "a worker rank", "dst": "a worker rank", "kv_heads": "a number of KV heads"})
        rec = await run("attention offload", executor and executor.offload_attention, layers, body["src"],
                        body["dst"], body["kv_heads"], "admin")
        return JSONResponse({"offload": rec.as_dict(), "offloads": _offloads(executor)})

    @app.post("/admin/restore")
    async def admin_restore(raw: Request) -> JSONResponse:
        body = await body_of(raw, '{"layers": [1]} (or {} for every offloaded layer)')
        layers = layers_of(body, required=False)
        done = await run("attention restore", executor and executor.restore_attention, layers, "admin")
        return JSONResponse({"restored": done, "offloads": _offloads(executor)})

    @app.get("/admin/workers")
    async def admin_workers() -> JSONResponse:
        if executor is None:
            return JSONResponse({"workers": 1, "layers": None, "migrations": [], "offloads": [],
                                 "offload_records": []})
        return JSONResponse({
            "workers": executor.world,
            "layers": [list(r) for r in executor.ranges],
            "links": [{"a": a, "b": b, "bytes_per_s": bw, "sync_s": s}
                      for (a, b), (bw, s) in executor.links.items()],
            "migrations": [r.as_dict() for r in executor.records],
            "offloads": _offloads(executor),
            "offload_records": [r.as_dict() for r in executor.offload_records],
            "pids": executor.worker_pids,
            "failed": executor.failed,
        })
