"""OpenAI request bodies and the checks that turn them into engine requests.

Only what the engine can honour is accepted; unknown OpenAI fields (``user`` ...) are
ignored the way vLLM ignores them, but a field whose value would change the answer and is
not supported (``n > 1``, ``best_of``, ``echo``, ``logprobs``, penalties, ``logit_bias``)
is refused with a 400 naming it, never silently dropped. Numbers must be finite;
``temperature`` in [0, 2] (below 1e-5 it is greedy), ``top_p`` in (0, 1], ``top_k`` -1/0
(all tokens) or >= 1. These models carry no engine
state, so llmplan's front end can validate with them before proxying.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmplan.runtime.engine.api import GREEDY_TEMPERATURE, SamplingParams
from llmplan.runtime.server.errors import APIError

# OpenAI's completion default; chat defaults to "the rest of the context" instead.
DEFAULT_COMPLETION_MAX_TOKENS = 16

class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    include_usage: bool = False
    # vLLM extension: usage (cumulative token counts) on every chunk, so a benchmark client
    # knows how many tokens each chunk carried even when their text is empty.
    continuous_usage_stats: bool = False


class _SamplingFields(BaseModel):
    # NaN and Infinity (which Python's JSON writes) are refused for every float field.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str | None = None
    # None (JSON null, which some SDKs send for "unset") means the OpenAI default.
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = 1
    seed: int | None = None
    # vLLM extension used by benchmarks: generate exactly max_tokens tokens.
    ignore_eos: bool = False
    # Optional latency targets (llmplan extension), forwarded to SLO-aware schedulers.
    slo_ttft_s: float | None = Field(None, gt=0)
    slo_tpot_s: float | None = Field(None, gt=0)
    slo_e2e_s: float | None = Field(None, gt=0)
    best_of: int | None = None
    logprobs: Any = None
    echo: bool | None = False
    # Accepted at their neutral values only: anything else would change the answer.
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # vLLM's convention: -1 (or 0, or unset) keeps every token.
    top_k: int | None = Field(None, ge=-1)
    min_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None

    def check_supported(self) -> None:
        if self.n not in (None, 1):
            raise APIError(400, f"'n' must be 1 (got {self.n}); send n separate requests", param="n")
        neutral: dict[str, tuple[Any, ...]] = {
            "presence_penalty": (None, 0, 0.0),
            "frequency_penalty": (None, 0, 0.0),
            "repetition_penalty": (None, 1, 1.0),
            "min_tokens": (None, 0),
        }
        for name, ok in neutral.items():
            value = getattr(self, name)
            if value not in ok:
                raise APIError(400, f"'{name}' is not supported by this engine (got {value}); leave it unset",
                               param=name)
        if self.logit_bias:
            raise APIError(400, "'logit_bias' is not supported; leave it unset or empty", param="logit_bias")
        if self.tools:
            raise APIError(400, "'tools' (function calling) is not supported; leave it unset", param="tools")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise APIError(400, "only 'response_format' {\"type\": \"text\"} is supported",
                           param="response_format")
        if self.best_of not in (None, 1):
            raise APIError(400, "'best_of' is not supported; leave it unset", param="best_of")
        if self.logprobs not in (None, False, 0):
            raise APIError(400, "'logprobs' is not supported; leave it unset", param="logprobs")
        if self.echo:
            raise APIError(400, "'echo' is not supported; leave it unset or false", param="echo")
        if isinstance(self.stop, list) and any(not s for s in self.stop):
            raise APIError(400, "'stop' entries must be non-empty strings", param="stop")

    def stop_list(self) -> list[str]:
        if self.stop is None or self.stop == "":
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def usage_on_every_chunk(self) -> bool:
        return bool(self.stream_options and self.stream_options.continuous_usage_stats)


class CompletionRequest(_SamplingFields):
    # Checked by single_prompt(): a union here would turn one mistake into four messages.
    prompt: Any
    max_tokens: int | None = Field(DEFAULT_COMPLETION_MAX_TOKENS, ge=1)
    suffix: str | None = None
    # vLLM extension: prepend BOS to a text prompt, as the model saw in training.
    add_special_tokens: bool = True

    def single_prompt(self) -> str | list[int]:
        """The one prompt of this request: text or token ids. Batched prompts are refused."""
        p = self.prompt
        if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str | list):
            p = p[0]
        elif isinstance(p, list) and p and all(isinstance(x, str | list) for x in p):
            raise APIError(
                400,
                f"'prompt' holds {len(p)} prompts; batched prompts are not supported, "
                "send one request per prompt",
                param="prompt",
            )
        if self.suffix:
            raise APIError(400, "'suffix' is not supported; leave it unset", param="suffix")
        if isinstance(p, str):
            if not p:
                raise APIError(400, "'prompt' is empty; send at least one character", param="prompt")
            return p
        if isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            if not p:
                raise APIError(400, "'prompt' is empty; send at least one token id", param="prompt")
            bad = next((t for t in p if t < 0), None)
            if bad is not None:
                raise APIError(400, f"'prompt' holds a negative token id ({bad})", param="prompt")
            return p
        raise APIError(
            400, "'prompt' must be a string or a list of token ids (non-negative integers)", param="prompt"
        )


class ChatContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ChatContentPart] | None = None
    name: str | None = None

    def text(self, index: int) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        out = []
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise APIError(
                    400,
                    f"content part of type '{part.type}' is not supported; send text parts only",
                    param=f"messages[{index}].content[{j}]",
                )
            out.append(part.text)
        return "".join(out)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    add_generation_prompt: bool = True

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def plain_messages(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text(i)} for i, m in enumerate(self.messages)]


def resolve_max_tokens(requested: int | None, prompt_tokens: int, max_model_len: int, field: str) -> int:
    """vLLM's rule: the prompt must leave room, and prompt + max_tokens must fit the context
    (:func:`llmplan.runtime.core.limits.context_rejection`, which the simulator applies too)."""
    from llmplan.runtime.core.limits import context_rejection

    bad = context_rejection(prompt_tokens, requested, max_model_len, field)
    if bad is not None:
        raise APIError(400, bad.message, param=bad.param)
    return max_model_len - prompt_tokens if requested is None else requested


def sampling_params(req: _SamplingFields, max_tokens: int) -> SamplingParams:
    temperature = 1.0 if req.temperature is None else req.temperature
    return SamplingParams(
        max_tokens=max_tokens,
        # Below the floor sampling is greedy (a tiny temperature overflows the logits).
        temperature=0.0 if temperature < GREEDY_TEMPERATURE else temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=-1 if not req.top_k else req.top_k,
        stop=req.stop_list(),
        ignore_eos=req.ignore_eos,
        seed=req.seed,
    )
