"""torch.distributed helpers: rank, world size, barrier, gathering; all no-ops in one process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_LOCAL = threading.local()


def _active() -> bool:
    import torch.distributed as dist

    if getattr(_LOCAL, "off", False):
        return False
    return bool(dist.is_available() and dist.is_initialized())


@contextmanager
def local() -> Iterator[None]:
    """Run the enclosed calls as if in one process (no sharding, no collectives)."""
    old = getattr(_LOCAL, "off", False)
    _LOCAL.off = True
    try:
        yield
    finally:
        _LOCAL.off = old


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside torch.distributed."""
    if not _active():
        return 0, 1
    import torch.distributed as dist

    return int(dist.get_rank()), int(dist.get_world_size())


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if _active():
        import torch.distributed as dist

        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in one process)."""
    if not _active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not _active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_ok(ok: bool) -> bool:
    """Whether every rank reports ``ok`` (lets all ranks fail together instead of hanging)."""
    if not _active():
        return ok
    import torch.distributed as dist

    flag = torch.tensor([0 if ok else 1], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag)
    return int(flag.item()) == 0
