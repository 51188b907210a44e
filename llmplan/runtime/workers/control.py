"""The migration controller on a live instance: worker loads in, migrations out.

Every ``interval_s`` (checked before a step, under the step lock) :class:`ControlLoop` gives the
:class:`~llmplan.migrate.controller.MigrationController` one
:class:`~llmplan.migrate.controller.WorkerLoad` per worker (:func:`worker_loads`) and executes
its decisions with the :class:`~llmplan.runtime.workers.migration.Migrator`: a layer move, or
an attention offload (or taking back heads the source hosts for the target). A decision the
stage map no longer allows is counted as not applied and logged; a dead worker stops the loop.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from llmplan.errors import LlmplanError
from llmplan.runtime.workers.migration import Migrator
from llmplan.runtime.workers.pool import WorkerFailure
from llmplan.runtime.workers.stage import StageWorker
from llmplan.runtime.workers.stages import Ranges

if TYPE_CHECKING:
    from llmplan.migrate.controller import MigrationController, WorkerLoad

log = logging.getLogger(__name__)


def worker_loads(stage: StageWorker, ranges: Ranges, share: Sequence[float], used_blocks: int,
                 capacity_bytes: float, num_kv_heads: int) -> list[WorkerLoad]:
    """One WorkerLoad per worker: compute = the stage's busy ``share`` of the step time (attention
    served for other workers included, waits for its own offloaded heads excluded); memory = held
    weights + KV in use (+ the offloaded heads' pools a worker hosts)."""
    from llmplan.migrate.controller import WorkerLoad

    extra = stage.weight_bytes() - len(stage.layers) * stage.layer_weight_bytes
    hosted = [0.0] * len(ranges)
    for off in stage.offloads.values():
        hosted[off.host] += used_blocks * stage.kv_block_bytes() * off.kv_heads / num_kv_heads
    out = []
    for r, (lo, hi) in enumerate(ranges):
        n = hi - lo
        held = n * stage.layer_weight_bytes + (extra if r == 0 else 0)
        kv = used_blocks * stage.kv_block_bytes() * n + hosted[r]
        # The name "w<rank>" is only the worker's label in the controller's logs and reasons.
        out.append(WorkerLoad(f"w{r}", share[r], float(held + kv), capacity_bytes, layers=(lo, hi),
                              layer_weight_bytes=float(stage.layer_weight_bytes), kv_bytes=float(kv),
                              rank=r))
    return out


class ControlLoop:
    """Runs ``controller`` every ``interval_s`` seconds of the instance's clock."""

    def __init__(self, controller: MigrationController, interval_s: float) -> None:
        if interval_s <= 0:
            raise LlmplanError(f"--control-interval must be > 0 s (got {interval_s})")
        self.controller = controller
        self.interval_s = interval_s
        self._last = 0.0
        self.not_applied: Counter = Counter()  # decisions not executed, by kind

    def due(self, now: float) -> bool:
        """True (and the period restarts) when a control step is due at ``now``."""
        if now - self._last < self.interval_s:
            return False
        self._last = now
        return True

    def step(self, now: float, loads: list[WorkerLoad], migrator: Migrator) -> None:
        """Ask the controller and execute its decisions (the caller holds the step lock)."""
        for d in self.controller.step(now, loads):
            src, dst = d.src_rank, d.dst_rank
            assert src is not None and dst is not None  # every load here has its rank
            try:
                if d.kind == "layer":
                    rec = migrator.migrate(tuple(d.layers), src, dst, "controller")
                    measured, priced = rec.measured_s, True
                else:
                    measured, priced = migrator.relieve_attention(src, dst, d.kv_fraction, "controller")
            except WorkerFailure:
                raise
            except LlmplanError as e:
                self.not_applied[d.kind] += 1
                log.warning("migration decision %s %s->%s not applied: %s", d.kind, d.src, d.dst, e)
                continue
            self.controller.record_result(d, measured, calibrate=priced)
