"""Private helpers for short reprs: a tensor as its shape, dtype and device, never its values."""

from __future__ import annotations

from torch import Tensor


def tensor_summary(t: Tensor) -> str:
    """``(32, 224, 224) float32 cpu``: shape, dtype and device of ``t`` in one short string."""
    dtype = str(t.dtype).removeprefix("torch.")
    return f"{tuple(t.shape)} {dtype} {t.device}"
