"""Live benchmarking: replay a workload against an OpenAI-compatible server over HTTP.

``replay(target, workload, ...)`` returns the same :class:`~llmplan.metrics.types.RunResult`
the simulator produces; ``llmplan bench --target URL`` is built on it.
"""

from llmplan.loadgen.prompts import PromptSynthesizer
from llmplan.loadgen.replay import Progress, discover, replay, replay_async

__all__ = ["Progress", "PromptSynthesizer", "discover", "replay", "replay_async"]
