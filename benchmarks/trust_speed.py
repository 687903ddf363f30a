"""Speed of the trust checks: deletion + insertion curves on many images.

Usage::

    python benchmarks/trust_speed.py [--images 500] [--size 64] [--steps 20] [--json PATH]

Times ``embedcam.trust.deletion_insertion`` (deletion and insertion, ``--steps`` steps, blur
imputation) on ``--images`` random images through the paper's CNN at its quick-preset size
(width 0.25, 64 x 64, random weights), with and without the random-order baseline, and the
Grad-CAM that produces the maps. Medians over ``--repeats`` runs (one warm-up each). The issue's
target: 20 steps on 500 images at 64 px in under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import embedcam as ec
from embedcam.trust import deletion_insertion

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from speed import machine_info, write_json  # noqa: E402

SCHEMA = "embedcam.trust_speed/1"


def run(images: int, size: int, steps: int, repeats: int, batch: int) -> dict[str, Any]:
    """Every measurement, as a JSON-ready dict."""
    from paper_sku.model import PaperCNN

    torch.manual_seed(0)
    model = PaperCNN(width=0.25, in_size=size).eval()
    x = torch.randn(images, 3, size, size)
    labels = torch.arange(images) % 10
    cents = torch.randn(10, model.embedding_dim)
    target = ec.CentroidTarget(cents, labels)
    cam = ec.EmbeddingCAM(model, model.cam_layer)

    def maps() -> torch.Tensor:
        return torch.cat(
            [
                cam(x[s : s + batch], ec.CentroidTarget(cents, labels[s : s + batch])).maps
                for s in range(0, images, batch)
            ]
        )

    m = maps()
    configs = {
        "gradcam-maps": maps,
        "deletion+insertion": lambda: deletion_insertion(
            model, x, m, target, steps=steps, random_baseline=False, batch_size=batch
        ),
        "deletion+insertion+random": lambda: deletion_insertion(
            model, x, m, target, steps=steps, random_baseline=True, batch_size=batch
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    for fn in configs.values():
        fn()  # warm-up
    for r in range(repeats):
        names = list(configs)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            configs[name]()
            times[name].append(time.perf_counter() - start)
    f = configs["deletion+insertion"]()
    return {
        "schema": SCHEMA,
        "machine": machine_info(torch.device("cpu")),
        "settings": {
            "images": images,
            "size": size,
            "steps": steps,
            "repeats": repeats,
            "batch_size": batch,
            "imputation": "blur",
        },
        "seconds": {k: statistics.median(v) for k, v in times.items()},
        "forwards_per_run": 2 * (steps + 1) * images,
        "mean_deletion_auc": float(f.deletion_auc.mean()),
        "mean_insertion_auc": float(f.insertion_auc.mean()),
        "target_under_60s": statistics.median(times["deletion+insertion"]) < 60.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Speed of deletion/insertion curves.")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    for name in ("images", "size", "steps", "repeats", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    result = run(args.images, args.size, args.steps, args.repeats, args.batch)
    from rich.console import Console
    from rich.table import Table

    m = result["machine"]
    console = Console()
    console.print(f"[bold]machine[/]: {m['cpu']}, {m['cores']} cores, torch {m['torch']}")
    s = result["settings"]
    table = Table(
        title=f"{s['images']} images at {s['size']} px, {s['steps']} steps, blur imputation, "
        f"median of {s['repeats']}"
    )
    table.add_column("config")
    table.add_column("seconds", justify="right")
    table.add_column("images/s", justify="right")
    for k, v in result["seconds"].items():
        table.add_row(k, f"{v:.2f}", f"{s['images'] / v:.0f}")
    console.print(table)
    console.print(f"target (deletion + insertion under 60 s): {result['target_under_60s']}")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
