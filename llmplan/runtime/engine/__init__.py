"""The built-in torch engine behind ``llmplan serve``: model, paged KV cache, executor, engine loop.

Importing this package is cheap (no torch): the server imports :mod:`.api` through it. The
engine is built by :func:`llmplan.runtime.factory.build_engine`, one layer up, which also picks
the multi-worker (:mod:`llmplan.runtime.workers`) and KV-store (:mod:`llmplan.kvstore`) variants.
"""
