"""Throughput of map-vs-box scoring: N maps of S x S against one random box each.

Maps imitate CAMs: an 8 x 8 random grid upsampled bilinearly to S x S. Scoring runs in batches
through the public API (`ec.boxes_to_masks`, `ec.scoring.score_maps`), first without the pixel AUC
(the issue's figure), then the AUC alone.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scoring_speed.py --n 10000 --size 128
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import embedcam as ec


def make_batch(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    grid = torch.rand(n, 1, 8, 8, generator=g)
    maps = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    wh = (torch.rand(n, 2, generator=g) * 0.4 + 0.2) * size
    xy = torch.rand(n, 2, generator=g) * (size - wh)
    boxes = torch.cat([xy, xy + wh], 1).unsqueeze(1)
    return maps, ec.boxes_to_masks(boxes, (size, size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of maps")
    parser.add_argument("--size", type=int, default=128, help="map side in pixels")
    parser.add_argument("--batch", type=int, default=1000, help="maps per score_maps call")
    args = parser.parse_args()

    batches = [
        make_batch(min(args.batch, args.n - lo), args.size, seed=lo)
        for lo in range(0, args.n, args.batch)
    ]
    ec.scoring.score_maps(*make_batch(4, args.size, seed=-1))  # warm-up

    t0 = time.perf_counter()
    means = [ec.scoring.score_maps(m, r, auc=False).nanmean() for m, r in batches]
    t_all = time.perf_counter() - t0

    t0 = time.perf_counter()
    for m, r in batches:
        ec.scoring.pixel_auc(m, r)
    t_auc = time.perf_counter() - t0

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(
        f"{args.n} maps {args.size}x{args.size}, batches of {args.batch}: all scores but AUC "
        f"{t_all:.2f} s ({args.n / t_all:.0f} maps/s); AUC alone {t_auc:.2f} s "
        f"({args.n / t_auc:.0f} maps/s)"
    )
    e = sum(d["energy_in_box"] for d in means) / len(means)
    a = sum(d["area_fraction"] for d in means) / len(means)
    print(f"sanity: mean energy in box {e:.3f} vs mean area {a:.3f} (random maps: about equal)")


if __name__ == "__main__":
    main()
