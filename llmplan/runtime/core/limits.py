"""Every rule that refuses a request, in one place, one text for both clocks.

* :func:`request_rejection`: what no instance can serve (no output asked for; the server's
  context-length rule on every instance that could take it). The simulator applies it on
  arrival, before routing (:func:`placement`); the server answers the same cases with 400.
* :func:`kv_rejection`: what one instance cannot hold (an empty prompt, a sequence longer than
  its KV capacity). :meth:`~llmplan.runtime.core.scheduler.Scheduler.add` applies it, in the
  engine and in the simulator alike.
* :func:`reject` marks a sequence REJECTED with the reason.

The engine's HTTP layer (:func:`llmplan.runtime.server.protocol.resolve_max_tokens`) answers
400 with :func:`context_rejection`'s message; the simulator rejects the same requests with the
same words (prefixed as the load generator records an HTTP error), so a simulated and a live
run of one trace count the same requests as ``rejected`` for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmplan.runtime.core.types import SeqState, SeqStatus


@dataclass(frozen=True, slots=True)
class ContextRejection:
    message: str
    param: str  # the request field at fault ("prompt", "messages", "max_tokens", ...)


def context_rejection(
    prompt_tokens: int, max_tokens: int | None, max_model_len: int, field: str = "max_tokens"
) -> ContextRejection | None:
    """vLLM's rule: the prompt must leave room for one token, and prompt + max_tokens must fit
    ``max_model_len``. None when the request fits; ``max_tokens=None`` checks the prompt only."""
    if prompt_tokens >= max_model_len:
        return ContextRejection(
            f"the prompt has {prompt_tokens} tokens but the model's context is {max_model_len} tokens; "
            "shorten the prompt",
            "prompt" if field == "max_tokens" else "messages",
        )
    room = max_model_len - prompt_tokens
    if max_tokens is not None and max_tokens > room:
        return ContextRejection(
            f"this model's maximum context length is {max_model_len} tokens, but {prompt_tokens} prompt "
            f"tokens + {max_tokens} '{field}' = {prompt_tokens + max_tokens}; "
            f"lower '{field}' to at most {room}",
            field,
        )
    return None


def http_reason(status: int, message: str) -> str:
    """The reason the load generator records for an HTTP error answer (``llmplan.loadgen``)."""
    text = message.strip().replace("\n", " ")
    return f"http {status}: {text[:200]}" if text else f"http {status}"


def reject(seq: SeqState, reason: str, now: float) -> None:
    """Mark ``seq`` REJECTED at ``now``; ``finish_reason`` carries the one-line reason."""
    seq.status = SeqStatus.REJECTED
    seq.finish_reason = reason
    seq.finish_s = now


def kv_rejection(prompt_tokens: int, transferred_tokens: int, kv_len: int) -> str | None:
    """The instance's rule: a sequence needs a prompt and room in the KV pool for the prompt (or
    the KV it arrives with) plus one generated token. ``kv_len``: the instance's longest
    sequence (``SchedulerConfig.max_model_len``). None when it can run."""
    if prompt_tokens <= 0:
        return f"prompt has {prompt_tokens} tokens; a request needs at least one prompt token"
    if max(prompt_tokens, transferred_tokens) + 1 > kv_len:
        return (
            f"prompt of {prompt_tokens} tokens does not fit the instance's {kv_len}-token "
            "KV capacity; give the instance more KV memory or shorten the prompt"
        )
    return None


def request_rejection(output_tokens: int) -> str | None:
    """What no instance serves, whatever its size: a request must generate a token."""
    if output_tokens < 1:
        return f"request asks for {output_tokens} output tokens; a request generates at least one"
    return None


def placement(
    prompt_tokens: int,
    output_tokens: int,
    entry: Sequence[tuple[int, bool]],
    decode: Sequence[int] = (),
) -> tuple[list[int], str | None]:
    """Which entry instances may take a request, by the server's rule (:func:`context_rejection`:
    prompt + output tokens within the context, here each instance's ``max_model_len``).

    ``entry``: ``(max_model_len, is_prefill)`` of each instance a request can arrive at; a
    prefill instance computes the prompt and its first token only (the P/D front end sends it
    ``max_tokens=1``). ``decode``: the decode instances' ``max_model_len`` (P/D), one of which
    must hold the whole sequence. Returns the indices into ``entry`` that fit, and when none does
    the reason as the load generator records the server's 400 answer."""
    bad_request = request_rejection(output_tokens)
    if bad_request is not None:
        return [], bad_request
    fits = [
        k
        for k, (ctx, prefill) in enumerate(entry)
        if context_rejection(prompt_tokens, 1 if prefill else output_tokens, ctx) is None
    ]
    if decode and not any(context_rejection(prompt_tokens, output_tokens, d) is None for d in decode):
        fits = []  # the prefill would run, but no decode instance could take the sequence
    if fits:
        return fits, None
    cap = max([ctx for ctx, _ in entry] + list(decode), default=0)
    bad = context_rejection(prompt_tokens, output_tokens, cap)
    assert bad is not None or decode
    message = (
        bad.message
        if bad is not None
        else (
            f"no decode instance holds {prompt_tokens} + {output_tokens} tokens; "
            "give the decode instances more KV memory"
        )
    )
    return [], http_reason(400, message)
