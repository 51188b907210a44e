"""One OpenAI-compatible endpoint in front of several engine servers.

Backends are vLLM or ``llmplan serve`` instances (they speak the same API). Each request
waits in the admission queue until a backend has a free slot, is routed by a router
object (the same plain objects the simulator uses), and is streamed through. Failure
handling is explicit and counted:

* the backend fails before anything reached the client: retry on another backend
  (up to ``max_retries``), so a crash loses nothing;
* the backend fails mid-stream: the client gets an SSE error event and ``[DONE]``, and
  the request is counted as failed; tokens already sent cannot be taken back;
* P/D: a request routed to a prefill instance makes two hops (prefill with max_tokens=1,
  then the full request on a decode instance); a failed hop is blamed on that hop's
  backend, counted in ``llmplan_frontend_pd_failures_total{hop,backend}``, and retried or
  reported as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from llmplan.frontend.admission import AdmissionQueue, AdmissionQueueFull
from llmplan.frontend.backends import Backend, BackendPool
from llmplan.frontend.pd import ConnectorHandoff, KvHandoff
from llmplan.frontend.priority import VllmPriority
from llmplan.runtime.server.errors import error_json, sse_error
from llmplan.runtime.server.guard import GuardConfig, install_guard
from llmplan.workload.types import SLO, RequestSpec

_RETRYABLE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class _BackendFailed(Exception):
    """A backend broke (connection error or 5xx) while handling a request.

    ``backend`` is the one to blame (None when there was none to try); ``hop`` is
    "prefill" or "decode" for the two hops of a P/D request, None otherwise."""

    def __init__(self, backend: Backend | None, message: str, hop: str | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.hop = hop


@dataclass
class FrontendMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "llmplan_frontend_requests", "Requests by final outcome", ["outcome"], registry=r
        )
        self.routed = Counter("llmplan_frontend_routed", "Dispatches per backend", ["backend"], registry=r)
        self.retries = Counter("llmplan_frontend_retries", "Retries after a backend failure", registry=r)
        self.backend_failures = Counter(
            "llmplan_frontend_backend_failures", "Backend failures seen", ["backend"], registry=r
        )
        self.queue_len = Gauge("llmplan_frontend_queue_length", "Requests waiting for admission", registry=r)
        self.inflight = Gauge(
            "llmplan_frontend_inflight", "Requests in flight per backend", ["backend"], registry=r
        )
        self.healthy = Gauge(
            "llmplan_frontend_backend_healthy", "1 if the backend is routable", ["backend"], registry=r
        )
        self.max_mean_load = Gauge(
            "llmplan_frontend_load_imbalance", "max/mean dispatched requests over backends", registry=r
        )
        self.instance_events = Counter(
            "llmplan_frontend_instance_events",
            "Supervisor events per instance",
            ["instance", "kind"],
            registry=r,
        )
        self.pd_handoffs = Counter(
            "llmplan_frontend_pd_handoffs",
            "P/D requests handed from a prefill to a decode instance",
            ["prefill", "decode"],
            registry=r,
        )
        self.pd_failures = Counter(
            "llmplan_frontend_pd_failures",
            "P/D request attempts whose prefill or decode hop failed",
            ["hop", "backend"],
            registry=r,
        )
        buckets = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
        self.ttft = Histogram(
            "llmplan_frontend_ttft_seconds", "TTFT at the front end", buckets=buckets, registry=r
        )
        self.e2e = Histogram(
            "llmplan_frontend_e2e_seconds", "E2E latency at the front end", buckets=buckets, registry=r
        )
        self.pd_prefill = Histogram(
            "llmplan_frontend_pd_prefill_seconds",
            "P/D prefill hop (part of the TTFT the client sees)",
            buckets=buckets,
            registry=r,
        )


class Frontend:
    """The proxy's state: backend pool, admission queue, metrics."""

    def __init__(
        self,
        pool: BackendPool,
        *,
        admission: AdmissionQueue | None = None,
        max_retries: int = 2,
        request_timeout_s: float = 600.0,
        no_backend_timeout_s: float = 30.0,
        handoff: KvHandoff | None = None,
        backend_api_key: str | None = None,
        priority: VllmPriority | None = None,
        slo_xargs: bool = False,
    ) -> None:
        self.pool = pool
        # vLLM backends with --scheduling-policy priority: each request's ``priority`` field
        # from a batch policy's order (llmplan.frontend.priority); the queue here uses it too.
        self.priority = priority
        # vLLM backends running llmplan's PolicyScheduler: each request's SLOs travel as
        # ``vllm_xargs`` (slo_ttft_s, slo_tpot_s, slo_e2e_s), where the policy inside vLLM reads them.
        self.slo_xargs = slo_xargs
        # The backends' key (they get the front end's own): sent on every call to them.
        self._auth = {"Authorization": f"Bearer {backend_api_key}"} if backend_api_key else {}
        pool.headers.update(self._auth)
        self.handoff: KvHandoff = handoff if handoff is not None else ConnectorHandoff()
        self.admission = admission if admission is not None else AdmissionQueue()
        self.max_retries = max_retries
        self.request_timeout_s = request_timeout_s
        self.no_backend_timeout_s = no_backend_timeout_s
        self.metrics = FrontendMetrics()
        self._client: httpx.AsyncClient | None = None
        self._rid = 0
        pool.on_health_change = self._dispatch_waiting

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.request_timeout_s, connect=5.0),
                                         headers=self._auth)
        await self.pool.start()

    async def close(self) -> None:
        await self.pool.close()
        if self._client is not None:
            await self._client.aclose()

    # -- admission & routing ----------------------------------------------------------------
    async def _acquire(
        self, max_tokens: int, deadline_s: float | None, spec: RequestSpec, priority: int | None = None
    ) -> Backend:
        """Wait for a slot, then route. Raises AdmissionQueueFull when the queue is full and
        NoBackendError when no backend has been healthy for ``no_backend_timeout_s``."""
        if not len(self.admission):
            backend = self.pool.try_route(spec)
            if backend is not None:
                return backend
        ticket = self.admission.enqueue(max_tokens, deadline_s, spec, priority=priority)
        self.metrics.queue_len.set(len(self.admission))
        waited_without_backend = 0.0
        try:
            while True:
                self._dispatch_waiting()
                try:
                    # Releases and health changes dispatch at once; the timeout is a safety net.
                    return await asyncio.wait_for(asyncio.shield(ticket.granted), timeout=0.5)
                except TimeoutError:
                    if not self.pool.any_routable():
                        waited_without_backend += 0.5
                        if waited_without_backend >= self.no_backend_timeout_s:
                            raise NoBackendError(self._no_backend_reason()) from None
                    else:
                        waited_without_backend = 0.0
        finally:
            if not ticket.granted.done():
                ticket.granted.cancel()
            self.admission.cancel(ticket)
            self.metrics.queue_len.set(len(self.admission))

    def _no_backend_reason(self) -> str:
        waited = f"{self.no_backend_timeout_s:g}s"
        if any(b.role == "prefill" and b.healthy for b in self.pool.backends):
            return (
                f"no healthy decode instance to hand P/D requests to for {waited} (the prefill instances "
                "are up); check the decode instances' logs"
            )
        return f"no healthy backend for {waited}; check the instance logs"

    def _dispatch_waiting(self) -> None:
        """Grant free slots to the best-scored waiting tickets."""
        while len(self.admission) and self.pool.has_capacity():
            ticket = self.admission.pop_next()
            if ticket is None or ticket.granted.done():  # the waiter went away
                continue
            backend = self.pool.try_route(ticket.spec)
            if backend is None:  # capacity vanished (health change): put it back
                self.admission.requeue(ticket)
                return
            ticket.granted.set_result(backend)

    def _release(self, backend: Backend, decode: Backend | None, culprit: Backend | None) -> None:
        """Free the slots one attempt held; take the backend that failed out of rotation."""
        self.pool.release(backend)
        if decode is not None:
            self.pool.release(decode)
        if culprit is not None:
            self.pool.mark_failed(culprit)
            self.metrics.backend_failures.labels(culprit.name).inc()
        self._dispatch_waiting()
        self._refresh_gauges()

    def _refresh_gauges(self) -> None:
        for b in self.pool.backends:
            self.metrics.inflight.labels(b.name).set(b.inflight)
            self.metrics.healthy.labels(b.name).set(1 if b.healthy else 0)
        self.metrics.max_mean_load.set(self.pool.max_mean_dispatch())

    # -- P/D disaggregation ------------------------------------------------------------------
    # A prefill backend is paired with a decode backend (``Backend.decode_url``; another
    # healthy decode backend when that one is down). The request first runs on the prefill
    # instance with max_tokens=1, then in full on the decode instance, whose answer is what
    # the client gets. How the KV travels between the two is the hand-off's business
    # (``llmplan.frontend.pd``): vLLM's connector via ``kv_transfer_params``, or the global
    # KV store shared by built-in instances.
    async def _prefill_hop(
        self, path: str, body: dict[str, Any], backend: Backend
    ) -> tuple[dict[str, Any], httpx.Response | None]:
        """Run the prompt on ``backend``; the decode request, or the prefill's 4xx answer
        (bad request, queue full), which is the client's to see."""
        assert self._client is not None
        t = time.monotonic()
        with _failing_as(backend, "prefill"):
            resp = await self._client.post(backend.url + path, json=self.handoff.prefill_body(body))
        if resp.status_code >= 500:
            raise _BackendFailed(backend, f"answered HTTP {resp.status_code}: {_snippet(resp)}", "prefill")
        if resp.status_code >= 400:
            return body, resp
        try:
            answer = resp.json()
        except ValueError:
            raise _BackendFailed(backend, "answered a body that is not JSON", "prefill") from None
        self.metrics.pd_prefill.observe(time.monotonic() - t)
        return self.handoff.decode_body(body, answer if isinstance(answer, dict) else {}), None

    async def _prepare(self, path: str, body: dict[str, Any], backend: Backend) -> _Dispatch:
        """Where the full request goes: ``backend`` itself, or (P/D) a decode backend after
        the prefill hop. Raises ``_BackendFailed`` before taking a decode slot, so the
        caller releases exactly what the returned dispatch holds."""
        if backend.role != "prefill":
            return _Dispatch(target=backend, body=body)
        send, client_error = await self._prefill_hop(path, body, backend)
        if client_error is not None:
            return _Dispatch(target=backend, body=body, client_error=client_error)
        decode = self.pool.acquire_decode(backend)
        if decode is None:
            raise _BackendFailed(None, "no healthy decode instance to hand the request to", "decode")
        self.metrics.routed.labels(decode.name).inc()
        return _Dispatch(target=decode, body=send, decode=decode)

    # -- forwarding -------------------------------------------------------------------------
    def _spec(self, body: dict[str, Any], max_tokens: int, now: float) -> RequestSpec:
        text, n_tokens = _prompt_text(body)
        self._rid += 1
        # The router sees max_tokens as the output length: the front end cannot know more.
        return RequestSpec(
            rid=self._rid, arrival_s=now, prompt_tokens=n_tokens, output_tokens=max_tokens, prompt=text
        )

    def _failed(self, exc: _BackendFailed, backend: Backend) -> str:
        """Count a failed hop; the message the client gets if it is not retried."""
        if exc.hop is not None and backend.role == "prefill":
            self.metrics.pd_failures.labels(exc.hop, exc.backend.name if exc.backend else "none").inc()
            where = exc.backend.name if exc.backend else "-"
            after = f" after the prefill on {backend.name}" if exc.hop == "decode" else ""
            return f"P/D {exc.hop} hop failed on {where}{after}: {exc}"
        return f"backend {backend.name} failed: {exc}"

    def _handed_off(self, backend: Backend, d: _Dispatch) -> None:
        if d.decode is not None:
            self.metrics.pd_handoffs.labels(backend.name, d.decode.name).inc()

    async def forward(self, path: str, body: dict[str, Any]) -> Response:
        bad = _check_routing_fields(body)
        if bad is not None:
            self.metrics.requests.labels("client_error").inc()
            return bad
        stream = bool(body.get("stream", False))
        # A routing hint only (the backend checks the real limit); capped so any int is usable.
        max_tokens = min(int(body.get("max_tokens") or body.get("max_completion_tokens") or 16), 1 << 24)
        deadline = body.pop("slo_e2e_s", None)
        start = time.monotonic()
        spec = self._spec(body, max_tokens, start)
        priority = None
        if self.priority is not None:
            slo = SLO(ttft_s=body.get("slo_ttft_s"), e2e_s=deadline)
            priority = body["priority"] = self.priority.priority(start, spec.prompt_tokens, max_tokens, slo)
        if self.slo_xargs:
            _slo_to_xargs(body, deadline)
        if stream:
            return StreamingResponse(
                self._stream(path, body, max_tokens, deadline, spec, start, priority),
                media_type="text/event-stream",
            )
        attempts = 0
        while True:
            try:
                backend = await self._acquire(max_tokens, deadline, spec, priority)
            except AdmissionQueueFull as exc:
                self.metrics.requests.labels("rejected").inc()
                return error_json(429, str(exc), headers={"Retry-After": f"{exc.retry_after_s:.0f}"})
            except NoBackendError as exc:
                self.metrics.requests.labels("failed").inc()
                return error_json(503, str(exc))
            self.metrics.routed.labels(backend.name).inc()
            self._refresh_gauges()
            d: _Dispatch | None = None
            culprit: Backend | None = None
            try:
                assert self._client is not None
                d = await self._prepare(path, body, backend)
                if d.client_error is not None:
                    resp = d.client_error
                else:
                    with _failing_as(d.target, "decode" if d.decode else None):
                        resp = await self._client.post(d.target.url + path, json=d.body)
                    if resp.status_code >= 500:
                        raise _BackendFailed(
                            d.target,
                            f"answered HTTP {resp.status_code}: {_snippet(resp)}",
                            "decode" if d.decode else None,
                        )
            except _BackendFailed as exc:
                culprit = exc.backend
                message = self._failed(exc, backend)
                attempts += 1
                if attempts > self.max_retries:
                    self.metrics.requests.labels("failed").inc()
                    return error_json(502, f"{message}; retries are exhausted")
                self.metrics.retries.inc()
                continue
            finally:
                self._release(backend, d.decode if d else None, culprit)
            self._handed_off(backend, d)
            self.metrics.e2e.observe(time.monotonic() - start)
            self.metrics.requests.labels("ok" if resp.status_code < 400 else "client_error").inc()
            return Response(
                resp.content,
                status_code=resp.status_code,
                media_type="application/json",
                headers={k: v for k, v in resp.headers.items() if k.lower() == "retry-after"},
            )

    async def _stream(
        self,
        path: str,
        body: dict[str, Any],
        max_tokens: int,
        deadline: float | None,
        spec: RequestSpec,
        start: float,
        priority: int | None = None,
    ) -> AsyncIterator[bytes]:
        attempts = 0
        sent_any = False
        while True:
            try:
                backend = await self._acquire(max_tokens, deadline, spec, priority)
            except AdmissionQueueFull as exc:
                self.metrics.requests.labels("rejected").inc()
                yield sse_error(429, str(exc))
                return
            except NoBackendError as exc:
                self.metrics.requests.labels("failed").inc()
                yield sse_error(503, str(exc))
                return
            self.metrics.routed.labels(backend.name).inc()
            self._refresh_gauges()
            d: _Dispatch | None = None
            culprit: Backend | None = None
            try:
                assert self._client is not None
                d = await self._prepare(path, body, backend)
                if d.client_error is not None:
                    self.metrics.requests.labels("client_error").inc()
                    yield b"data: " + d.client_error.content + b"\n\n"
                    return
                hop = "decode" if d.decode else None
                with _failing_as(d.target, hop):
                    async with self._client.stream("POST", d.target.url + path, json=d.body) as resp:
                        if resp.status_code >= 500:
                            raise _BackendFailed(d.target, f"answered HTTP {resp.status_code}", hop)
                        if resp.status_code >= 400:
                            payload = await resp.aread()
                            self.metrics.requests.labels("client_error").inc()
                            yield b"data: " + payload + b"\n\n"
                            return
                        self._handed_off(backend, d)
                        async for chunk in resp.aiter_raw():
                            if not sent_any:
                                # Includes the prefill hop: that is the TTFT the client sees.
                                self.metrics.ttft.observe(time.monotonic() - start)
                            sent_any = True
                            yield chunk
                self.metrics.e2e.observe(time.monotonic() - start)
                self.metrics.requests.labels("ok").inc()
                return
            except _BackendFailed as exc:
                culprit = exc.backend
                message = self._failed(exc, backend)
                if sent_any:
                    # Tokens already reached the client: retrying would duplicate them.
                    self.metrics.requests.labels("failed").inc()
                    yield sse_error(502, f"{message} mid-stream")
                    yield b"data: [DONE]\n\n"
                    return
                attempts += 1
                if attempts > self.max_retries:
                    self.metrics.requests.labels("failed").inc()
                    yield sse_error(502, f"{message}; retries are exhausted")
                    return
                self.metrics.retries.inc()
            finally:
                self._release(backend, d.decode if d else None, culprit)


@dataclass(slots=True)
class _Dispatch:
    """Where one attempt of a request goes after routing (and, for P/D, the prefill hop)."""

    target: Backend
    body: dict[str, Any]
    decode: Backend | None = None  # the decode slot this attempt holds (P/D)
    client_error: httpx.Response | None = None  # the prefill's 4xx answer, passed on as is


@contextlib.contextmanager
def _failing_as(backend: Backend, hop: str | None) -> Iterator[None]:
    """Connection-level errors inside the block become a failure of ``backend``."""
    try:
        yield
    except _RETRYABLE as exc:
        raise _BackendFailed(backend, f"{type(exc).__name__}: {exc}".rstrip(": "), hop) from exc


def _snippet(resp: httpx.Response, n: int = 200) -> str:
    try:
        return resp.text[:n].strip()
    except (httpx.ResponseNotRead, UnicodeDecodeError):
        return ""


class NoBackendError(Exception):
    pass


def _slo_to_xargs(body: dict[str, Any], e2e_s: float | None) -> None:
    """Move a request's SLOs (``slo_ttft_s``, ``slo_tpot_s``; ``e2e_s`` already taken from the body)
    where vLLM hands them to its scheduler: ``vllm_xargs`` (vLLM's ``SamplingParams.extra_args``),
    merged with any the client sent."""
    slo = {k: body.pop(k, None) for k in ("slo_ttft_s", "slo_tpot_s")} | {"slo_e2e_s": e2e_s}
    slo = {k: v for k, v in slo.items() if v is not None}
    if slo:
        given = body.get("vllm_xargs")
        body["vllm_xargs"] = {**(given if isinstance(given, dict) else {}), **slo}


def _check_routing_fields(body: dict[str, Any]) -> JSONResponse | None:
    """The fields the front end itself reads (to queue and route) must be what they claim; the
    rest is the backend's to check (vLLM accepts more than the built-in engine)."""
    for name in ("max_tokens", "max_completion_tokens"):
        v = body.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            return error_json(400, f"'{name}' must be a positive integer (got {json.dumps(v)[:40]})", name)
    v = body.get("stream")
    if v is not None and not isinstance(v, bool):
        return error_json(400, f"'stream' must be true or false (got {json.dumps(v)[:40]})", "stream")
    for name in ("slo_e2e_s", "slo_ttft_s"):
        v = body.get(name)
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or not 0 < v < math.inf):
            got = json.dumps(v)[:40]
            return error_json(400, f"'{name}' must be a positive number of seconds (got {got})", name)
    return None


def _prompt_text(body: dict[str, Any]) -> tuple[str, int]:
    """The request's prompt as text (for prefix-aware routing and length prediction) and a
    token-count estimate (exact for token-id prompts, ~4 characters a token otherwise)."""
    if "messages" in body:
        text = json.dumps(body["messages"], ensure_ascii=False)
        return text, max(1, len(text) // 4)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return " ".join(map(str, prompt)), len(prompt)
    text = prompt if isinstance(prompt, str) else json.dumps(prompt)
    return text, max(1, len(text) // 4)


def combine_deployments(specs: list[tuple[Backend, dict[str, Any]]], router: Any, admission: str) -> dict:
    """One spec for a front end over backends that each report one instance: the backends
    must run the same model, precision and scheduler settings (else ValueError)."""
    from llmplan.deployment import DeploymentSpec

    parsed = [(b, DeploymentSpec.from_dict(d, f"backend {b.name}")) for b, d in specs]
    if not parsed:
        raise ValueError("the front end has no backends")
    first = parsed[0][1]
    key = (first.model, first.weight_dtype, first.device, first.engine)
    for b, sp in parsed[1:]:
        if (sp.model, sp.weight_dtype, sp.device, sp.engine) != key:
            raise ValueError(f"backend {b.name} runs another model or scheduler settings than "
                             f"{parsed[0][0].name}; one spec cannot describe them")
    instances = []
    for b, sp in parsed:
        for inst in sp.instances:
            inst.name = b.name if len(sp.instances) == 1 else f"{b.name}.{inst.name}"
            inst.role = b.role
            instances.append(inst)
    name = getattr(router, "name", None) or type(router).__name__
    combined = DeploymentSpec(
        model=first.model, instances=instances, weight_dtype=first.weight_dtype, kv_dtype=first.kv_dtype,
        topology=first.topology, device=first.device, engine=first.engine, router=str(name),
        admission=admission, kv_store=first.kv_store, source="llmplan serve (front end)",
    )  # fmt: skip
    return combined.to_dict()


def build_app(frontend: Frontend, guard: GuardConfig | None = None) -> FastAPI:  # noqa: C901 - the routes are closures over the front end; the figure is their sum, each route is short
    """The front end's app; ``guard`` sets its API key and request limits (as ``llmplan serve``)."""
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await frontend.start()
        try:
            yield
        finally:
            await frontend.close()

    app = FastAPI(title="llmplan front end", lifespan=lifespan)
    install_guard(app, guard if guard is not None else GuardConfig())

    async def _parse(request: Request) -> dict[str, Any] | JSONResponse:
        raw = await request.body()
        try:
            # A large body is parsed off the event loop, which streams every other request.
            body = json.loads(raw) if len(raw) < 1 << 16 else await asyncio.to_thread(json.loads, raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_json(400, "request body is not valid JSON; send a JSON object", "body")
        if not isinstance(body, dict):
            return error_json(400, "request body must be a JSON object", "body")
        return body

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await _parse(request)
        return body if isinstance(body, Response) else await frontend.forward("/v1/completions", body)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await _parse(request)
        return body if isinstance(body, Response) else await frontend.forward("/v1/chat/completions", body)

    @app.get("/v1/models")
    async def models() -> Response:
        backend = frontend.pool.any_healthy()
        if backend is None or frontend._client is None:
            return error_json(503, "no healthy backend; check `llmplan serve` logs")
        resp = await frontend._client.get(backend.url + "/v1/models")
        return Response(resp.content, status_code=resp.status_code, media_type="application/json")

    @app.get("/v1/deployment")
    async def deployment() -> Response:
        """The deployment behind this front end: every backend's own spec as one instance each,
        with this front end's router and admission order (``llmplan.deployment``)."""
        if frontend._client is None:
            return error_json(503, "the front end is not started")
        specs = []
        for b in frontend.pool.backends:
            try:
                resp = await frontend._client.get(b.url + "/v1/deployment")
            except httpx.HTTPError as exc:
                why = type(exc).__name__
                return error_json(503, f"backend {b.name} did not answer GET /v1/deployment ({why})")
            if resp.status_code != 200:
                code = resp.status_code
                return error_json(404, f"backend {b.name} does not report its deployment (HTTP {code}); "
                                  "describe it with a spec file (--config)")
            specs.append((b, resp.json()))
        try:
            return JSONResponse(combine_deployments(specs, frontend.pool.router, frontend.admission.policy))
        except ValueError as exc:
            return error_json(409, str(exc))

    @app.get("/health")
    async def health() -> Response:
        ok = frontend.pool.any_healthy() is not None
        return JSONResponse(
            {"healthy_backends": len(frontend.pool.healthy())}, status_code=200 if ok else 503
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        frontend._refresh_gauges()
        return Response(generate_latest(frontend.metrics.registry), media_type="text/plain; version=0.0.4")

    return app
