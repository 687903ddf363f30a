"""k-nearest-neighbour classification of embeddings (the paper's classifier) and ``embed``.

The classifier and its evaluation live in the library
([`embedcam.classify`][embedcam.classify], where the choices made where the paper is silent are
documented); this module re-exports them and adds [`embed`][paper_sku.knn.embed], the
whole-dataset embedding pass of the example.

Examples:
    >>> import torch
    >>> from paper_sku.knn import knn_predict, evaluate
    >>> gallery = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> pred = knn_predict(torch.tensor([[1.0, 0.2], [0.2, 1.0]]), gallery,
    ...                    torch.tensor([0, 0, 1, 1]), k=3)
    >>> pred.tolist()
    [0, 1]
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from embedcam.classify import KnnEvaluation, evaluate, knn_predict
from paper_sku.train import _collate, _split_item

__all__ = ["knn_predict", "KnnEvaluation", "evaluate", "embed"]


@torch.no_grad()
def embed(
    model: nn.Module,
    data: Dataset | DataLoader,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and labels of a whole dataset, in eval mode (the caller's mode is restored).

    Args:
        model: Embedding model.
        data: A dataset of ``(image, label)`` tuples / image-label dicts, or a DataLoader of them.
        batch_size: Batch size when ``data`` is a dataset.
        device: Where to run; default the model's device.

    Returns:
        ``(N, D)`` float32 embeddings on the CPU and ``(N,)`` int64 labels.
    """
    if device is None:
        device = next(model.parameters()).device
    loader = (
        data
        if isinstance(data, DataLoader)
        else DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=_collate)
    )
    was_training = model.training
    model.eval()
    try:
        embs, labs = [], []
        for batch in loader:
            images, labels = _split_item(batch)
            embs.append(model(images.to(device, torch.float32)).float().cpu())
            labs.append(torch.as_tensor(labels).to(torch.int64).cpu())
    finally:
        model.train(was_training)
    return torch.cat(embs), torch.cat(labs)
