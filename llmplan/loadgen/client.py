"""One benchmark request over HTTP: stream a completion and time it.

Every call returns a :class:`RequestRecord`, whatever happens (HTTP error, timeout,
connection reset, a malformed stream): the caller never loses a request. Times are on
the monotonic clock, relative to the run's origin, and taken when bytes arrive.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from llmplan.metrics.types import RequestRecord
from llmplan.runtime.core.limits import http_reason
from llmplan.workload.types import RequestSpec

# Refusals the server made on purpose (the request was never run) vs failures.
_REJECT_STATUSES = {400, 404, 413, 422, 429, 503}


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer $LLMPLAN_API_KEY`` for a server started with ``--api-key``
    (the same variable the server reads); nothing when it is unset."""
    import os

    key = os.environ.get("LLMPLAN_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True, slots=True)
class Endpoint:
    base_url: str
    model: str


def completion_body(endpoint: Endpoint, spec: RequestSpec, prompt_ids: list[int]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": endpoint.model,
        "prompt": prompt_ids,
        "max_tokens": max(1, spec.output_tokens),
        # Force the trace's output length: no EOS, no stop strings; greedy keeps it cheap.
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    # llmplan serve forwards per-request SLOs to SLO-aware schedulers; others ignore them.
    for kind in ("ttft_s", "tpot_s", "e2e_s"):
        value = getattr(spec.slo, kind)
        if value is not None:
            body[f"slo_{kind}"] = value
    return body


def _error_message(status: int, raw: bytes) -> str:
    try:
        err = json.loads(raw)
        msg = err.get("error", {}).get("message") if isinstance(err.get("error"), dict) else err.get("detail")
    except (ValueError, AttributeError):
        msg = None
    return http_reason(status, msg or raw.decode("utf-8", "replace"))


async def run_request(  # noqa: C901 - one streamed HTTP exchange: SSE parsing, timeout and each failure kind recorded on the record
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    spec: RequestSpec,
    prompt_ids: list[int],
    *,
    t0: float,
    timeout_s: float,
) -> RequestRecord:
    def now() -> float:
        return time.monotonic() - t0

    rec = RequestRecord(
        rid=spec.rid, arrival_s=now(), prompt_tokens=spec.prompt_tokens, output_tokens=0, slo=spec.slo,
        instance=endpoint.base_url,
    )
    token_times: list[float] = []
    finish_reason: str | None = None
    seen_usage = False
    try:
        async with asyncio.timeout(timeout_s):
            body = completion_body(endpoint, spec, prompt_ids)
            async with client.stream("POST", endpoint.base_url + "/v1/completions", json=body) as resp:
                if resp.status_code != 200:
                    rec.status = "rejected" if resp.status_code in _REJECT_STATUSES else "failed"
                    rec.reason = _error_message(resp.status_code, await resp.aread())
                    rec.finish_s = None
                    return rec
                async for line in sse_lines(resp):
                    if not line.startswith("data:"):
                        continue
                    t = now()
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    obj = json.loads(payload)
                    if "error" in obj:
                        err = obj["error"]
                        raise _StreamError(err.get("message", err) if isinstance(err, dict) else err)
                    usage = obj.get("usage")
                    choices = obj.get("choices") or []
                    if usage and "completion_tokens" in usage:
                        seen_usage = True
                        new = usage["completion_tokens"] - len(token_times)
                        token_times.extend([t] * max(0, new))
                    elif choices and choices[0].get("text") and not seen_usage:
                        # A server without usage-per-chunk: count chunks that carried text.
                        token_times.append(t)
                    if choices and choices[0].get("finish_reason"):
                        finish_reason = choices[0]["finish_reason"]
        rec.finish_s = now()
    except TimeoutError:
        rec.status, rec.reason = "failed", f"timeout after {timeout_s:g}s"
    except _StreamError as exc:
        rec.status, rec.reason = "failed", f"server error mid-stream: {exc}"
    except httpx.HTTPError as exc:
        rec.status, rec.reason = "failed", f"{type(exc).__name__}: {exc or 'connection error'}"
    except (ValueError, KeyError, TypeError) as exc:
        rec.status, rec.reason = "failed", f"malformed stream: {exc}"
    rec.output_tokens = len(token_times)
    if token_times:
        rec.first_token_s = token_times[0]
        rec.token_times_s = token_times
    if rec.status == "ok":
        if finish_reason is None:
            rec.status, rec.reason = "failed", "the stream ended without a finish_reason"
        elif not token_times:
            rec.status, rec.reason = "failed", "the stream carried no tokens"
    if rec.status != "ok":
        rec.finish_s = None
        rec.first_token_s = None if rec.status == "rejected" else rec.first_token_s
    return rec


class _StreamError(Exception):
    pass


async def sse_lines(resp: httpx.Response) -> AsyncIterator[str]:
    """SSE lines split on \\n only, as the SSE spec says.

    httpx's ``aiter_lines`` uses ``str.splitlines``, which also splits on U+2028, U+0085 and
    other characters that servers (vLLM among them) leave unescaped inside JSON strings.
    """
    buf = b""
    async for chunk in resp.aiter_bytes():
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8")
    if buf:
        yield buf.rstrip(b"\r").decode("utf-8")
