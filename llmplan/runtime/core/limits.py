"""What a server refuses before scheduling: the context-length rule, one text for both clocks.

The engine's HTTP layer (:func:`llmplan.runtime.server.protocol.resolve_max_tokens`) answers
400 with :func:`context_rejection`'s message; the simulator rejects the same requests with the
same words (prefixed as the load generator records an HTTP error), so a simulated and a live
run of one trace count the same requests as ``rejected`` for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass


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
