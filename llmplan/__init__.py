"""llmplan: plan, schedule and benchmark LLM inference deployments."""

__version__ = "0.1.0"
