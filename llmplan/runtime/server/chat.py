"""Chat messages -> prompt text.

A tokenizer that carries a chat template (an HF tokenizer of an instruct model) renders
with it, so a real checkpoint is prompted the way it was trained. Random-weight
catalog models have no template; they get a plain role-tagged transcript, which is all a
benchmark needs (the token count is what matters there).
"""

from __future__ import annotations

from typing import Any


def _hf_tokenizer(tokenizer: Any) -> Any | None:
    """The HF tokenizer behind the engine's tokenizer, when it has a chat template."""
    # The engine's HF wrapper keeps the transformers tokenizer in ``_tok``.
    inner = [getattr(tokenizer, a, None) for a in ("hf_tokenizer", "tokenizer", "_tok")]
    for cand in (tokenizer, *inner):
        if cand is not None and getattr(cand, "chat_template", None) and hasattr(cand, "apply_chat_template"):
            return cand
    return None


def simple_template(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    parts = [f"<|{m['role']}|>\n{m['content']}\n" for m in messages]
    if add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


def render_chat(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    hf = _hf_tokenizer(tokenizer)
    if hf is not None:
        return hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return simple_template(messages, add_generation_prompt)


def has_chat_template(tokenizer: Any) -> bool:
    return _hf_tokenizer(tokenizer) is not None
