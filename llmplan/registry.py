"""One name -> factory table for every pluggable family (batch policies, routers, systems, ...).

A family keeps its public dicts (``POLICIES``, ``ALIASES``, ...); a :class:`Registry` wraps
them by reference, so registering into the dict or through the registry is the same thing.
Lookup is case-insensitive, resolves aliases, imports lazily registered modules on first use,
and refuses an unknown name with one line listing the known ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Generic, TypeVar

from llmplan.errors import LlmplanError

E = TypeVar("E")
R = TypeVar("R")


def dashed(name: str) -> str:
    """``" Round_Robin "`` -> ``"round-robin"``: the usual key of a family."""
    return name.strip().lower().replace("_", "-")


def lowered(name: str) -> str:
    return name.strip().lower()


class Registry(Generic[E]):
    """Name -> entry (a factory, or a definition) for one family called ``kind``.

    ``aliases`` maps other spellings to a canonical name; ``lazy`` maps a canonical name to the
    module that registers it when imported. An unknown name is answered with ``choose`` and the
    known names (sorted, or in registration order with ``sort=False``; aliases too with
    ``list_aliases``).
    """

    def __init__(
        self,
        kind: str,
        entries: MutableMapping[str, E],
        *,
        aliases: Mapping[str, str] | None = None,
        lazy: Mapping[str, str] | None = None,
        normalize: Callable[[str], str] = dashed,
        list_aliases: bool = False,
        choose: str = "choose one of: ",
        sort: bool = True,
    ) -> None:
        self.kind = kind
        self.entries = entries
        self.aliases: Mapping[str, str] = aliases if aliases is not None else {}
        self.lazy: Mapping[str, str] = lazy if lazy is not None else {}
        self._normalize = normalize
        self._list_aliases = list_aliases
        self._choose = choose
        self._sort = sort

    def register(self, name: str, entry: E) -> None:
        self.entries[name] = entry

    def names(self) -> list[str]:
        """The canonical names (lazily registered ones included)."""
        names = list(dict.fromkeys([*self.entries, *self.lazy]))
        return sorted(names) if self._sort else names

    def known(self) -> list[str]:
        """What an unknown name is answered with."""
        return self.names() + (sorted(self.aliases) if self._list_aliases else [])

    def key(self, name: str) -> str:
        """The canonical name for ``name`` (its module imported if lazy); LlmplanError if unknown."""
        key = self._normalize(name)
        key = self.aliases.get(key, key)
        if key not in self.entries and key in self.lazy:
            importlib.import_module(self.lazy[key])
        if key not in self.entries:
            raise LlmplanError(f"unknown {self.kind} {name!r}; {self._choose}{', '.join(self.known())}")
        return key

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = self._normalize(name)
        key = self.aliases.get(key, key)
        return key in self.entries or key in self.lazy

    def get(self, name: str) -> E:
        return self.entries[self.key(name)]

    def create(self: Registry[Callable[..., R]], name: str, **kwargs: object) -> R:
        """Build one by name; bad options are one LlmplanError naming the family member."""
        key = self.key(name)
        try:
            return self.entries[key](**kwargs)
        except (TypeError, ValueError) as e:
            raise LlmplanError(f"bad options for {self.kind} {key!r}: {e}") from None
