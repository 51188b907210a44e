"""Control messages between the driver (rank 0, the server process) and its workers.

Control travels over one ``multiprocessing`` pipe per worker (pickled dataclasses); tensors
travel over the instance's process group (:mod:`.comm`). The split keeps an idle worker
blocked on its pipe with no collective timeout running, and a dead driver shows up as EOF on
the pipe, so a worker never outlives its server.

Driver -> worker: :class:`StepMsg`, :class:`MigrateMsg`, :class:`OffloadMsg`, :class:`RestoreMsg`,
:class:`ProbeMsg`, :class:`StopMsg`.
Worker -> driver: :class:`Hello` and :class:`Ready` once while starting, :class:`Failed` before a
worker exits on an error (the driver folds its text into the engine's error).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmplan.runtime.engine.step_inputs import SeqWork
from llmplan.runtime.workers.offload import HeadOffload


@dataclass(slots=True)
class StepMsg:
    """One engine step: every rank builds the same StepInputs from the same work."""

    work: list[SeqWork]


@dataclass(slots=True)
class MigrateMsg:
    layers: tuple[int, ...]
    src: int
    dst: int
    blocks: list[int]  # KV blocks in use: the rows of each moved layer's pools that travel


@dataclass(slots=True)
class OffloadMsg:
    """Attention migration: ``off.kv_heads`` KV heads of ``off.layer`` go from owner to host."""

    off: HeadOffload
    blocks: list[int]  # KV blocks in use: the rows of the heads' pools that travel


@dataclass(slots=True)
class RestoreMsg:
    """Undo the attention offloads of these layers (nothing travels: the owner's pool is complete)."""

    layers: tuple[int, ...]


@dataclass(slots=True)
class ProbeMsg:
    a: int
    b: int
    nbytes: int


@dataclass(slots=True)
class StopMsg:
    pass


@dataclass(slots=True)
class Hello:
    """Imports done, about to join the process group (the driver joins only then)."""

    rank: int


@dataclass(slots=True)
class Ready:
    rank: int
    layers: tuple[int, int]
    weight_bytes: int
    pid: int


@dataclass(slots=True)
class Failed:
    rank: int
    error: str  # one line: the exception
    traceback: str
