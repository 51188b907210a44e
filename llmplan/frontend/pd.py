"""How a prefill instance's KV reaches its decode instance: the edge of the P/D path.

The front end's P/D logic is the same for every engine (route to a prefill instance, run the
prompt there with ``max_tokens=1``, send the full request to a decode instance, stream its
answer back); only the way the decode side finds the KV differs, and that lives here:

* :class:`ConnectorHandoff` -- vLLM's KV connectors (NIXL, LMCache, P2P NCCL). The prefill
  request carries ``kv_transfer_params`` with ``do_remote_decode``; the prefill answer's
  ``kv_transfer_params`` tell the decode instance where to pull the blocks from.
* :class:`StoreHandoff` -- the built-in engine with a global KV store (``llmplan serve
  --kv-store DIR``) shared by all instances. The prefill writes the prompt's full blocks to
  the store; the decode instance gets the plain request, finds those blocks in the store and
  recomputes only the partial tail block. Nothing is passed between the two hops.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from llmplan.registry import Registry

HandoffKind = Literal["connector", "store"]
HANDOFFS: tuple[str, ...] = ("connector", "store")

# Fields that make no sense (or conflict) on a one-token prefill request.
_DECODE_ONLY = ("stream_options", "max_completion_tokens", "min_tokens", "n", "best_of")


class KvHandoff(Protocol):
    name: str

    def prefill_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request the prefill instance gets."""
        ...

    def decode_body(self, body: dict[str, Any], prefill_answer: dict[str, Any]) -> dict[str, Any]:
        """The request the decode instance gets, given the prefill instance's JSON answer."""
        ...


def one_token(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as a non-streaming request for exactly one token: the prompt's prefill."""
    pre = {k: v for k, v in body.items() if k not in _DECODE_ONLY}
    pre["max_tokens"] = 1
    pre["stream"] = False
    return pre


class ConnectorHandoff:
    name = "connector"

    def prefill_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            **one_token(body),
            "kv_transfer_params": {
                "do_remote_decode": True,
                "do_remote_prefill": False,
                "remote_engine_id": None,
                "remote_block_ids": None,
                "remote_host": None,
                "remote_port": None,
            },
        }

    def decode_body(self, body: dict[str, Any], prefill_answer: dict[str, Any]) -> dict[str, Any]:
        params = prefill_answer.get("kv_transfer_params")
        # Without params (a connector that does not answer them) the decode side recomputes.
        return {**body, "kv_transfer_params": params} if params else body


class StoreHandoff:
    name = "store"

    def prefill_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return one_token(body)

    def decode_body(self, body: dict[str, Any], prefill_answer: dict[str, Any]) -> dict[str, Any]:
        return body


_HANDOFF_FACTORIES: dict[str, type[KvHandoff]] = {"connector": ConnectorHandoff, "store": StoreHandoff}
assert tuple(_HANDOFF_FACTORIES) == HANDOFFS
_REGISTRY: Registry[type[KvHandoff]] = Registry(
    "P/D hand-off", _HANDOFF_FACTORIES, normalize=str, choose="choose one of ", sort=False
)


def get_handoff(kind: str) -> KvHandoff:
    return _REGISTRY.create(kind)


def parse_pd(text: str, instances: int) -> tuple[int, int]:
    """``--pd P:D`` -> (P, D), checked against ``--instances``."""
    from llmplan.errors import LlmplanError

    a, sep, b = text.strip().partition(":")
    if not sep or not a.strip().isdigit() or not b.strip().isdigit():
        raise LlmplanError(f"--pd wants PREFILL:DECODE instance counts, e.g. --pd 1:1; got {text!r}")
    p, d = int(a), int(b)
    if p < 1 or d < 1:
        raise LlmplanError(
            f"--pd {text}: a P/D deployment needs at least one prefill and one decode instance, e.g. --pd 1:1"
        )
    if p + d != instances:
        raise LlmplanError(
            f"--pd {text} asks for {p + d} instances but --instances is {instances}; "
            f"use --instances {p + d} or a split that adds up to {instances}"
        )
    return p, d
