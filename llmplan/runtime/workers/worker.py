"""The loop of a worker process (ranks 1..N-1): build its stage, then obey the driver."""

from __future__ import annotations

import os
import signal
import traceback

import llmplan.runtime.workers.protocol as msgs
from llmplan.runtime.workers.stage import StageSource


def worker_main(rank: int, world: int, port: int, source: StageSource, ranges, conn, timeout_s: float,
                threads: int | None) -> None:
    # Ctrl-C reaches the whole process group; the server drains and then stops its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    try:
        import torch

        from llmplan.runtime.engine.step_inputs import build_step_inputs
        from llmplan.runtime.workers.comm import Comm, probe_link
        from llmplan.runtime.workers.stage import StageWorker, worker_device

        if threads:
            torch.set_num_threads(threads)
        conn.send(msgs.Hello(rank))
        comm = Comm.connect(rank, world, port, worker_device(source.device, rank), timeout_s,
                            connect_timeout_s=60.0)
        stage = StageWorker(source, rank, world, ranges)
        conn.send(msgs.Ready(rank, stage.ranges[rank], stage.weight_bytes(), os.getpid()))
        while True:
            try:
                msg = conn.recv()
            except EOFError:  # the driver is gone: nothing left to serve
                return
            match msg:
                case msgs.StepMsg():
                    stage.forward(comm, build_step_inputs(msg.work, stage.block_size, stage.device))
                case msgs.MigrateMsg():
                    stage.migrate(comm, msg.layers, msg.src, msg.dst, msg.blocks)
                case msgs.OffloadMsg():
                    stage.offload(comm, msg.off, msg.blocks)
                case msgs.RestoreMsg():
                    stage.restore(msg.layers)
                case msgs.ProbeMsg():
                    probe_link(comm, msg.a, msg.b, msg.nbytes)
                case msgs.StopMsg():
                    return
                case _:
                    raise TypeError(f"unknown control message {type(msg).__name__}")
    except BaseException as e:  # noqa: BLE001 - report anything, then exit non-zero
        try:
            first_line = f"{type(e).__name__}: {e}".splitlines()[0][:500]
            conn.send(msgs.Failed(rank, first_line, traceback.format_exc()))
        except Exception:  # noqa: BLE001 - the driver may be gone already
            pass
        raise SystemExit(1) from None
