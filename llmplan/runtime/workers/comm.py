"""Point-to-point tensors between the workers of one instance, over a process group of its own.

Each instance owns a ``ProcessGroupGloo`` (CPU) or ``ProcessGroupNCCL`` (CUDA) built from its own
``TCPStore`` rather than torch.distributed's global default group, so a server process (or a test)
can hold several instances, and start and stop them, without global state. Every operation waits
at most ``timeout``: a worker that dies makes its peers fail within that bound (gloo usually
notices a closed connection at once), never hang.
"""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import torch
import torch.distributed as dist


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Comm:
    def __init__(self, rank: int, world: int, pg, store, device: torch.device, timeout_s: float) -> None:
        self.rank, self.world = rank, world
        self.pg, self._store = pg, store
        self.device = device
        self.timeout = timedelta(seconds=timeout_s)

    @classmethod
    def connect(cls, rank: int, world: int, port: int, device: torch.device, timeout_s: float = 120.0,
                host: str = "127.0.0.1", connect_timeout_s: float = 300.0) -> Comm:
        """Rendezvous of ``world`` ranks on ``host:port`` (rank 0 hosts the store)."""
        store = dist.TCPStore(host, port, world, rank == 0, timeout=timedelta(seconds=connect_timeout_s))
        if device.type == "cuda":
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timedelta(seconds=timeout_s)
            pg = dist.ProcessGroupNCCL(store, rank, world, opts)
        else:
            pg = dist.ProcessGroupGloo(store, rank, world, timedelta(seconds=timeout_s))
        return cls(rank, world, pg, store, device, timeout_s)

    def send(self, t: torch.Tensor, dst: int) -> None:
        self.pg.send([t.contiguous()], dst, 0).wait(self.timeout)

    def isend(self, t: torch.Tensor, dst: int):
        """Start a send; the caller waits on the returned work (``.wait(self.timeout)``) and keeps
        ``t`` alive until then."""
        return self.pg.send([t], dst, 0)

    def recv(self, t: torch.Tensor, src: int) -> torch.Tensor:
        self.pg.recv([t], src, 0).wait(self.timeout)
        return t

    def barrier(self) -> None:
        self.pg.barrier().wait(self.timeout)

    def close(self) -> None:
        self.pg = None
        self._store = None


def probe_link(comm: Comm, a: int = 0, b: int = 1, nbytes: int = 8 << 20) -> tuple[float, float]:
    """Measured (bytes/s, barrier seconds) of the link ``a -> b``; every rank must call it.

    The barrier time is ``T_sync`` of the estimate; the bandwidth is one ``nbytes`` transfer plus
    a one-element acknowledgement. Rank 0 gets the figures (from rank ``a`` when it is not 0);
    the other ranks get (0.0, sync).
    """
    buf = torch.zeros(nbytes // 4, dtype=torch.float32, device=comm.device)
    comm.barrier()
    t0 = time.perf_counter()
    for _ in range(3):
        comm.barrier()
    sync = (time.perf_counter() - t0) / 3
    comm.barrier()
    out = torch.zeros(1, dtype=torch.float64, device=comm.device)
    if comm.rank == a:
        t0 = time.perf_counter()
        comm.send(buf, b)
        comm.recv(buf[:1], b)
        out[0] = nbytes / (time.perf_counter() - t0)
        if a != 0:
            comm.send(out, 0)
    elif comm.rank == b:
        comm.recv(buf, a)
        comm.send(buf[:1], a)
    if comm.rank == 0 and a != 0:
        comm.recv(out, a)
    comm.barrier()
    return float(out[0]), sync
