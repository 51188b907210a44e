"""Operator endpoints of a multi-worker instance, installed by the server's ``create_app``.

``POST /admin/migrate {"layers": [3], "src": 0, "dst": 1}`` moves boundary layers (weights and
the KV blocks in use) between adjacent workers between two engine steps, while requests stream;
the reply is the migration's record (bytes, measured seconds beside the estimate S/B + T_sync)
and the new stage map. An invalid move is a 409 naming the movable layers; a server with one
worker answers 409 too. ``GET /admin/workers`` shows the stage map, the probed links and the
migrations so far. Once a worker has failed, ``/health`` answers 503 ``{"status": "failed"}``.

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
    driver = sys.modules.get("llmplan.runtime.workers.driver")
    ex = getattr(getattr(engine, "engine", None), "executor", None)
    return ex if driver is not None and isinstance(ex, driver.PipelineExecutor) else None


_EXAMPLE = '{"layers": [3], "src": 0, "dst": 1}'


def _int_list(v: Any) -> list[int] | None:
    if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return None
    return v


def install_admin(app, engine) -> None:
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

    @app.post("/admin/migrate")
    async def admin_migrate(raw: Request) -> JSONResponse:
        try:
            body = json.loads(await raw.body() or b"null")
        except ValueError:
            raise APIError(400, f"the body is not valid JSON; send {_EXAMPLE}") from None
        if not isinstance(body, dict):
            raise APIError(400, f"send a JSON object {_EXAMPLE}")
        layers = _int_list(body.get("layers"))
        if layers is None:
            raise APIError(400, "'layers' must be a non-empty list of layer indices, e.g. [3]",
                           param="layers")
        for key in ("src", "dst"):
            if not isinstance(body.get(key), int) or isinstance(body.get(key), bool):
                raise APIError(400, f"'{key}' must be a worker rank (an integer)", param=key)
        if executor is None:
            raise APIError(409, "this server runs one worker; layer migration needs "
                           "`llmplan serve --workers N` with N >= 2")
        from llmplan.runtime.workers.driver import WorkerFailure

        try:
            rec = await asyncio.to_thread(executor.migrate, layers, body["src"], body["dst"], "admin")
        except WorkerFailure as e:
            raise APIError(500, str(e)) from None
        except LlmplanError as e:
            raise APIError(409, f"{e}; the stage map is {executor.ranges}") from None
        return JSONResponse({"migration": rec.as_dict(), "layers": [list(r) for r in executor.ranges]})

    @app.get("/admin/workers")
    async def admin_workers() -> JSONResponse:
        if executor is None:
            return JSONResponse({"workers": 1, "layers": None, "migrations": []})
        return JSONResponse({
            "workers": executor.world,
            "layers": [list(r) for r in executor.ranges],
            "links": [{"a": a, "b": b, "bytes_per_s": bw, "sync_s": s}
                      for (a, b), (bw, s) in executor.links.items()],
            "migrations": [r.as_dict() for r in executor.records],
            "pids": executor.worker_pids,
            "failed": executor.failed,
        })
