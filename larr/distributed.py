"""Several processes, one run: the torchrun / ``accelerate launch`` view every stage shares.

A stage calls :func:`setup_distributed` (or uses :func:`distributed` as a context manager) and
gets a :class:`Dist`: rank 0 of 1 when run plainly, else this process's place in the launch
(``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` set by the launcher). The process group is the real
engine's (``torch.distributed``; gloo on CPU, nccl with one GPU per rank); models are wrapped in
``DistributedDataParallel`` by the stage that trains them. Rules every stage follows:

- **Data sharded per rank** from one global order that does not depend on the number of
  processes (:meth:`Dist.shard` for contiguous slices), so a checkpoint made by N processes
  resumes on M.
- **Metrics reduced across ranks**: predictions are gathered (:meth:`Dist.gather_array`) and
  scored once — an AUC of the gathered predictions, never an average of per-rank AUCs.
- **Only rank 0 writes** artifacts, logs and reports (:attr:`Dist.main`); the others wait at a
  :meth:`Dist.barrier` before reading what it wrote.
- **Cross-rank in-batch negatives**: :meth:`Dist.gather_rows` concatenates every rank's rows
  *with gradients* (``torch.distributed.nn.functional.all_gather``), so a contrastive loss can
  see the global batch as its negatives (``dist.gather_negatives``).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

from larr.device import resolve_device


RANK0_TIMEOUT = timedelta(hours=2)
"""How long a collective waits: the other ranks wait at a barrier while rank 0 alone evaluates and saves
(stage 2's retrieval evaluation of a big model on CPU can take well over torch's default 30 minutes)."""


def env_world() -> int:
    """Processes of the launch as the launcher announced them (1 when run plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """This process's rank as the launcher announced it, readable before the group exists."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Rank 0 (or no launcher): the one process that writes files shared by the run."""
    return env_rank() == 0


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun/accelerate launch (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False  # this run created the process group, so it also destroys it
    nccl: bool = False  # collectives need CUDA tensors

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where tensors must be for a collective of this group (nccl: this rank's GPU)."""
        return torch.device("cuda", torch.cuda.current_device()) if self.nccl else torch.device("cpu")

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over ranks (float64)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        torch.distributed.all_reduce(t)
        return t.cpu().tolist()

    def mean(self, value: float) -> float:
        return value if self.world == 1 else self.sum([value])[0] / self.world

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items (sizes differ by at most one; rank order = item order)."""
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def row_counts(self, n: int) -> list[int]:
        """Every rank's ``n``, in rank order."""
        return [int(s) for s in self.sum([0.0] * self.rank + [float(n)] + [0.0] * (self.world - self.rank - 1))]

    def gather_rows(self, t: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
        """Every rank's rows of ``t`` concatenated in rank order, the same on every rank.

        Floating tensors keep their gradient: ``torch.distributed.nn.functional.all_gather``
        sends each rank's share of the gradient back to the rank that made the rows (summed
        over ranks), so a loss computed on the gathered rows trains every rank's encoder. Ranks
        may hold different numbers of rows (padded for the collective, trimmed after); ``sizes``
        (:meth:`row_counts`) saves one collective when several tensors of the same rows travel.
        """
        if self.world == 1:
            return t
        sizes = sizes or self.row_counts(len(t))
        pad = max(sizes) - len(t)
        padded = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) if pad else t
        if t.is_floating_point() and t.requires_grad:
            import warnings

            from torch.distributed.nn.functional import all_gather

            with warnings.catch_warnings():  # deprecated in favour of a private API; still the autograd one
                warnings.filterwarnings("ignore", category=FutureWarning)
                parts = all_gather(padded.contiguous())
        else:  # as raw bytes: gloo has no int16 / bfloat16 / bool collectives
            wire = padded.contiguous().view(torch.uint8)
            parts = [torch.empty_like(wire) for _ in range(self.world)]
            torch.distributed.all_gather(parts, wire)
            parts = [p.view(t.dtype) for p in parts]
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    def gather_array(self, a: np.ndarray) -> np.ndarray:
        """Every rank's rows of a NumPy array concatenated in rank order (no gradient; e.g. predictions)."""
        if self.world == 1:
            return a
        out = self.gather_rows(torch.from_numpy(np.ascontiguousarray(a)).to(self.comm_device))
        return out.cpu().numpy()


def setup_distributed(device_spec: str) -> tuple[Dist, torch.device]:
    """One process unless launched with ``WORLD_SIZE > 1``: then DDP over gloo (CPU) or nccl (one GPU per rank).

    Joins a process group another caller (accelerate, a notebook) already made instead of making one.
    """
    device = resolve_device(device_spec)
    if env_world() <= 1:
        return Dist(), device
    import torch.distributed as tdist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = not tdist.is_initialized()
    if owns:
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=RANK0_TIMEOUT)
    return Dist(tdist.get_rank(), tdist.get_world_size(), owns, tdist.get_backend() == "nccl"), device


def teardown(dist: Dist, wait: bool = True) -> None:
    """Destroy the process group if this run made it; ``wait``: after every rank got here (a rank
    that closes its connections while a peer is still in a collective can abort the peer)."""
    if dist.owns_group:
        if wait:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@contextmanager
def distributed(device_spec: str) -> Iterator[tuple[Dist, torch.device]]:
    """:func:`setup_distributed` for the duration of a stage, torn down after (on error without
    waiting for the other ranks: the launcher stops them)."""
    dist, device = setup_distributed(device_spec)
    try:
        yield dist, device
    except BaseException:
        teardown(dist, wait=False)
        raise
    teardown(dist)


def wrap_ddp(model: torch.nn.Module, dist: Dist, device: torch.device, sync_buffers: bool = True) -> torch.nn.Module:
    """``model`` in ``DistributedDataParallel`` when there are several ranks, else itself.

    ``sync_buffers=False``: the buffers (e.g. a frozen vector table) are the same on every rank and
    never change, so DDP need not broadcast them before every forward."""
    if dist.world == 1:
        return model
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    kwargs = {}
    if not sync_buffers:  # torch ≥ 2.13 renamed the switch (and still syncs once at init)
        new = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        kwargs["forward_sync_buffers" if new else "broadcast_buffers"] = False
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, **kwargs)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a local launch's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(nproc: int, args: list[str]) -> list[str]:
    """The command that runs ``python ARGS`` on ``nproc`` local processes: ``torch.distributed.run`` on a free
    port, or plain ``python`` for one (tests and benchmarks; users type ``torchrun``)."""
    import sys

    if nproc == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
