"""Embedding CAMs: the :class:`EmbeddingCAM` front door, its result, and the native formulas."""

from embedcam.cam.core import BACKENDS, EmbeddingCAM, available_methods
from embedcam.cam.result import CamResult, finish_maps, normalize_maps, upsample
from embedcam.cam.weights import FORMULAS

__all__ = [
    "EmbeddingCAM",
    "CamResult",
    "available_methods",
    "BACKENDS",
    "FORMULAS",
    "upsample",
    "normalize_maps",
    "finish_maps",
]
