"""An instance's role: one name per role, shared by the planner, the core, the simulator, the
routers, the deployment spec and the front end.

``"both"`` is the colocated role (an instance that prefills and decodes). Where people type a
role (a deployment spec's JSON, a front-end spec) the front end's old spelling ``"colocated"`` is
accepted too (:func:`parse_role`); where the front end prints an instance it still says
``colocated`` (:func:`role_label`).
"""

from __future__ import annotations

from typing import Literal, cast

from llmplan.errors import LlmplanError

Role = Literal["both", "prefill", "decode"]
ROLES: tuple[Role, ...] = ("both", "prefill", "decode")
COLOCATED: Role = "both"
_ALIASES: dict[str, Role] = {"colocated": "both"}


def parse_role(value: object, what: str = "role") -> Role:
    """``value`` as a :data:`Role` (``"colocated"`` is ``"both"``); one-line error otherwise."""
    key = str(value).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in ROLES:
        raise LlmplanError(f"{what} {value!r} is unknown; use {', '.join(ROLES)} (or colocated for both)")
    return cast(Role, key)


def role_label(role: str) -> str:
    """How the front end shows a role: ``colocated`` for ``both``."""
    return "colocated" if role == "both" else role
