"""Stop rules: when a sequence is done after it emitted a token.

The simulator's rule (:class:`OutputLengthStop`) knows every request's output length in advance,
which is what lets it fast-forward decode steps (:mod:`llmplan.runtime.core.fast_forward`); the
engine's rule (``llmplan.runtime.engine.llm_engine.EngineStopRule``) depends on sampled tokens.
"""

from __future__ import annotations

from typing import Protocol

from llmplan.runtime.core.types import FinishReason, SeqState


class StopRule(Protocol):
    """Decides when a sequence is done after it emitted a token. A pure check: it reads the
    sequence (and state its owner advanced, e.g. through ``Scheduler.on_token``) and changes
    nothing."""

    def __call__(self, seq: SeqState) -> str | None:
        """A finish reason ("length", "stop", "eos", ...) or None to continue."""
        ...

    def steps_left(self, seq: SeqState) -> int | None:
        """Tokens still to emit before the rule fires, if that is known in advance (the
        simulator's rule); None when it depends on sampled tokens (EOS, stop strings), which
        disables decode fast-forward. The default, None, is right for any rule over sampled
        tokens; a rule that subclasses this protocol inherits it."""
        return None


class OutputLengthStop(StopRule):
    """The simulator's stop rule: a request generates exactly ``spec.output_tokens`` tokens."""

    def __call__(self, seq: SeqState) -> str | None:
        return FinishReason.LENGTH if seq.num_generated >= seq.spec.output_tokens else None

    def steps_left(self, seq: SeqState) -> int | None:
        return seq.spec.output_tokens - seq.num_generated
