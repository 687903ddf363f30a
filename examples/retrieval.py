"""Explain retrieval on real product photos: rank lists, pair maps and point-to-point maps.

Usage::

    python examples/retrieval.py --data path/to/grocery-store --out outputs/retrieval

Trains a torchvision ResNet-18 (random initialisation: nothing is downloaded) with a triplet loss
on the ``train`` split of a Roboflow folder export - made for the Grocery Store dataset (Klasson,
Zhang and Kjellstrom, "A Hierarchical Grocery Store Image Dataset with Visual and Semantic
Labels", WACV 2019; MIT licence) - embeds the ``test`` split as the gallery, and explains the
queries of the ``valid`` split:

* ``rank_list_<i>.png`` - a query, its top-k gallery neighbours (green: same product, red:
  another one), what matched on both sides, and for wrong neighbours that outranked the right
  match, what in the query made them win;
* ``point_to_point.png`` - for a query and its nearest neighbour, where on the neighbour three
  points of the query find their match (the point-to-point decomposition, exact here since the
  ResNet's ``fc`` is linear);
* a table of recall@1 / recall@5 of the gallery search.

The trained weights are cached in ``--out`` under a key of every setting and the training
images' names and sizes, so a second run only explains. About 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import embedcam as ec
from embedcam.datasets import ImageDataset, load_roboflow
from embedcam.report import GridCell, image_grid, rank_list_figure

#: ImageNet statistics: the usual input normalisation of a torchvision ResNet.
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Embedder(nn.Module):
    """ResNet-18 with a 128-d linear head, L2-normalised: a typical retrieval model."""

    def __init__(self, dim: int = 128) -> None:
        super().__init__()
        import torchvision

        self.backbone = torchvision.models.resnet18(weights=None, num_classes=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images -> ``(B, 128)`` unit embeddings."""
        return F.normalize(self.backbone(x), dim=1)


def _cache_key(settings: dict[str, Any], index: Any) -> str:
    h = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=8)
    for s in index.samples:
        h.update(f"{s.path.name}:{s.path.stat().st_size}:{s.label}".encode())
    return h.hexdigest()


def train(train_set: ImageDataset, epochs: int, seed: int, out: Path, key: str) -> Embedder:
    """Train (or load from the cache) the embedder with a semi-hard triplet loss."""
    from paper_sku.losses import TripletLoss
    from paper_sku.sampler import PKSampler
    from rich.progress import Progress

    torch.manual_seed(seed)
    model = Embedder()
    path = out / f"model-{key}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    labels = train_set.index.labels()
    sampler = PKSampler(labels, p=16, k=4, seed=seed)
    loader = DataLoader(train_set, batch_sampler=sampler)
    loss_fn = TripletLoss(margin=0.2)  # semi-hard mining (batch-hard collapses from scratch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    with Progress() as bar:
        task = bar.add_task("train", total=epochs * len(sampler))
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for batch in loader:
                loss = loss_fn(model(batch["image"]), batch["label"])
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.update(task, advance=1, description=f"train epoch {epoch + 1} loss {loss:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    ec.atomic.atomic_write_bytes(path, _state_bytes(model))
    return model.eval()


def _state_bytes(model: nn.Module) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def point_figure(model: Embedder, query: torch.Tensor, neighbour: torch.Tensor, path: Path) -> Path:
    """Three points of the query and where each finds its match on the neighbour."""
    p2p = ec.point_to_point(
        model, "backbone.layer4", query[None], neighbour[None], head=model.backbone.fc
    )
    # the query locations that contribute most, a median amount and least to the similarity
    h, w = p2p.query_grid
    size = query.shape[-1]
    order = p2p.matrix[0].sum(dim=1).argsort(descending=True).tolist()
    cells = [order[0], order[len(order) // 2], order[-1]]
    kinds = ["strongest", "median", "weakest"]
    show_q = _display(query)
    show_n = _display(neighbour)
    top: list[GridCell | None] = [GridCell(show_q, title="query", map=p2p.query.maps[0])]
    bottom: list[GridCell | None] = [
        GridCell(
            show_n, title=f"neighbour (cos {float(p2p.similarity[0]):.2f})", map=p2p.gallery.maps[0]
        )
    ]
    step = size // h
    for kind, c in zip(kinds, cells):
        y, x = (c // w) * step, (c % w) * step
        box = torch.tensor([[x, y, x + step, y + step]])
        top.append(GridCell(show_q, title=f"{kind} query point", boxes=box))
        bottom.append(
            GridCell(
                show_n, title="its match", map=p2p.correspondence(0, y + step // 2, x + step // 2)
            )
        )
    return image_grid(
        [top, bottom],
        path,
        row_titles=["query", "neighbour"],
        title=f"Point-to-point (exact: {p2p.exact}): the parts sum to the cosine",
        cell_size=1.8,
    )


def _display(image: torch.Tensor) -> torch.Tensor:
    m, s = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return (image * s + m).clamp(0, 1)


def main(argv: list[str] | None = None) -> int:
    """Train or load the model, search the gallery, write the figures; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a Roboflow folder export")
    parser.add_argument("--out", type=Path, default=Path("outputs/retrieval"))
    parser.add_argument("--size", type=int, default=112, help="input size in pixels")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--k", type=int, default=5, help="neighbours per rank list")
    parser.add_argument("--queries", type=int, default=3, help="rank-list figures to draw")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    index = load_roboflow(args.data)
    kw: dict[str, Any] = {"size": args.size, "mean": MEAN, "std": STD}
    train_set = ImageDataset(index, split="train", **kw)
    queries = ImageDataset(index, split="valid", **kw)
    gallery = ImageDataset(index, split="test", **kw)
    settings = {"size": args.size, "epochs": args.epochs, "seed": args.seed, "model": "resnet18"}
    key = _cache_key(settings, train_set.index)
    model = train(train_set, args.epochs, args.seed, args.out, key)

    emb = ec.embed_loader(model, DataLoader(gallery, batch_size=64), progress=True, what="gallery")
    q_emb = ec.embed_loader(model, DataLoader(queries, batch_size=64), progress=True, what="query")
    sims = q_emb.embeddings @ emb.embeddings.T
    top5 = sims.topk(5, dim=1).indices
    hits = emb.labels[top5] == q_emb.labels[:, None]
    table = Table(title=f"gallery search: {len(queries)} queries, {len(gallery)} gallery images")
    for col in ("recall@1", "recall@5"):
        table.add_column(col, justify="right")
    table.add_row(f"{hits[:, 0].float().mean():.3f}", f"{hits.any(dim=1).float().mean():.3f}")
    console.print(table)

    # the queries to draw: wrong top-1 first (they show the contrast row), then a correct one
    wrong = (~hits[:, 0]).nonzero().flatten().tolist()
    right = hits[:, 0].nonzero().flatten().tolist()
    picks = (wrong[: max(1, args.queries - 1)] + right[:1])[: args.queries]
    cam = ec.EmbeddingCAM(model, "backbone.layer4")
    for n, qi in enumerate(picks):
        item = queries[qi]
        ranks = ec.rank_list(
            cam,
            item["image"],
            gallery,
            k=args.k,
            query_label=int(item["label"]),
            gallery_embeddings=emb.embeddings,
            gallery_labels=emb.labels,
        )
        path = rank_list_figure(
            ranks,
            args.out / f"rank_list_{n}.png",
            mean=MEAN,
            std=STD,
            names=index.classes,
            title=f"query {qi}: {index.classes[int(item['label'])]}",
        )
        console.print(f"wrote {path} ({ranks!r})")
    first = queries[picks[0]]["image"]
    neighbour = gallery[int(sims[picks[0]].argmax())]["image"]
    console.print(f"wrote {point_figure(model, first, neighbour, args.out / 'point_to_point.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
