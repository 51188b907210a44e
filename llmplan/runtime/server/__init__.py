"""OpenAI-compatible HTTP server over the :class:`~llmplan.runtime.engine.api.AsyncEngine` protocol."""

from llmplan.runtime.server.app import ServerState, create_app, state_of
from llmplan.runtime.server.run import ServeOptions, build_server, serve

__all__ = ["ServeOptions", "ServerState", "build_server", "create_app", "serve", "state_of"]
