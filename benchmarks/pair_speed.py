"""Speed of retrieval explanations: pairs on both sides, and point-to-point maps.

Usage::

    python benchmarks/pair_speed.py [--quick] [--json PATH] [--device cpu|cuda] [--repeats N]

Two questions, each answered by ratios measured in one process, interleaved (every repeat runs
every configuration once, in a rotating order, after one warm-up call each), medians:

1. What does ``explain_pair`` (both sides of B pairs) cost against one single-sided Grad-CAM of
   the same B images (``EmbeddingCAM(images, ReferenceTarget(refs))``)? Target: at most 2.2x,
   since it explains twice as many images. Also timed: the naive way, embedding the partners
   under inference mode and calling the CAM once per side (``two-calls``).
2. How many images per second does ``point_to_point`` decompose on a ResNet-50 at 224 x 224
   (``layer4``, a 128-d ``fc`` head, so the decomposition is exact), against a plain inference
   forward of the same images?

Models: the paper's CNN (width 1.0, 128 x 128) and a randomly initialised torchvision ResNet-50
(224 x 224). ``--quick`` uses tiny batches and two repeats (the test suite runs it and checks the
JSON, not the timings). The JSON keys are documented in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

import embedcam as ec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import build_model, machine_info, time_configs, write_json  # noqa: E402

SCHEMA = "embedcam.pair_speed/1"

# model -> (input size, pairs per batch, quick pairs per batch)
MODELS = {"paper_cnn": (128, 16, 2), "resnet50": (224, 8, 1)}
PAIR_CONFIGS = ["forward-2b", "single-side", "explain-pair", "two-calls"]
P2P_CONFIGS = ["forward-2b", "point-to-point"]


def _images(size: int, n: int, device: torch.device, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=gen).to(device)


def pair_runners(name: str, pairs: int, device: torch.device) -> dict[str, Any]:
    """Zero-argument callables for the pair configurations of one model."""
    model, layer = build_model(name)
    model = model.to(device)
    size = MODELS[name][0]
    q, g = _images(size, pairs, device, 1), _images(size, pairs, device, 2)
    cam = ec.EmbeddingCAM(model, layer)
    with torch.inference_mode():
        eg = model(g)
    ref = ec.ReferenceTarget(eg)
    both = torch.cat([q, g])

    def forward_2b() -> Any:
        with torch.inference_mode():
            return model(both)

    def two_calls() -> Any:
        with torch.inference_mode():
            e_q, e_g = model(q), model(g)
        return cam(q, ec.ReferenceTarget(e_g)), cam(g, ec.ReferenceTarget(e_q))

    return {
        "forward-2b": forward_2b,
        "single-side": lambda: cam(q, ref),
        "explain-pair": lambda: ec.explain_pair(cam, q, g),
        "two-calls": two_calls,
    }


def p2p_runners(pairs: int, device: torch.device) -> dict[str, Any]:
    """Callables for point-to-point on ResNet-50 and the inference forward of the same images."""
    model, layer = build_model("resnet50")
    model = model.to(device)
    size = MODELS["resnet50"][0]
    q, g = _images(size, pairs, device, 3), _images(size, pairs, device, 4)
    both = torch.cat([q, g])

    def forward_2b() -> Any:
        with torch.inference_mode():
            return model(both)

    return {
        "forward-2b": forward_2b,
        "point-to-point": lambda: ec.point_to_point(model, layer, q, g, head=model.fc),
    }


def summarise(times: dict[str, list[float]], images: int) -> dict[str, dict[str, float]]:
    """Median seconds per call and images per second of each configuration."""
    out = {}
    for cfg, ts in times.items():
        med = statistics.median(ts)
        out[cfg] = {"median_s": med, "images_per_s": images / med, "repeats": len(ts)}
    return out


def run(models: list[str], quick: bool, repeats: int, device: torch.device) -> dict[str, Any]:
    """Every measurement of the benchmark, as a JSON-ready dict."""
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "machine": machine_info(device),
        "settings": {"quick": quick, "repeats": repeats},
        "pairs": {},
    }
    for name in models:
        pairs = MODELS[name][2 if quick else 1]
        times = time_configs(pair_runners(name, pairs, device), repeats, device)
        # images explained: single-side explains B, every other config 2B images
        configs = summarise(times, 2 * pairs)
        configs["single-side"]["images_per_s"] = pairs / configs["single-side"]["median_s"]
        single = configs["single-side"]["median_s"]
        result["pairs"][name] = {
            "input_size": MODELS[name][0],
            "pairs": pairs,
            "configs": configs,
            "pair_over_single": configs["explain-pair"]["median_s"] / single,
            "two_calls_over_single": configs["two-calls"]["median_s"] / single,
            "target_pair_le_2.2x_single": configs["explain-pair"]["median_s"] / single <= 2.2,
        }
    pairs = MODELS["resnet50"][2 if quick else 1]
    times = time_configs(p2p_runners(pairs, device), repeats, device)
    configs = summarise(times, 2 * pairs)
    result["point_to_point"] = {
        "model": "resnet50",
        "input_size": MODELS["resnet50"][0],
        "pairs": pairs,
        "configs": configs,
        "images_per_s": configs["point-to-point"]["images_per_s"],
        "pairs_per_s": configs["point-to-point"]["images_per_s"] / 2,
        "over_forward": configs["point-to-point"]["median_s"] / configs["forward-2b"]["median_s"],
    }
    return result


def print_tables(result: dict[str, Any]) -> None:
    """Rich tables of a run."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m = result["machine"]
    console.print(
        f"[bold]machine[/]: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
        f"torch {m['torch']}, device {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}"
    )
    reps = result["settings"]["repeats"]
    for name, rec in result["pairs"].items():
        size = rec["input_size"]
        table = Table(
            title=f"{name}: {rec['pairs']} pairs at {size}x{size}, median of {reps} interleaved "
            "repeats"
        )
        for col in ("config", "ms/call", "images explained/s", "x single-side"):
            table.add_column(col, justify="left" if col == "config" else "right")
        single = rec["configs"]["single-side"]["median_s"]
        for cfg, c in rec["configs"].items():
            table.add_row(
                cfg,
                f"{c['median_s'] * 1000:.0f}",
                "-" if cfg == "forward-2b" else f"{c['images_per_s']:.1f}",
                f"{c['median_s'] / single:.2f}",
            )
        console.print(table)
        console.print(
            f"  explain_pair / single side = {rec['pair_over_single']:.2f} (target <= 2.2: "
            f"{rec['target_pair_le_2.2x_single']}); two calls / single side = "
            f"{rec['two_calls_over_single']:.2f}"
        )
    p = result["point_to_point"]
    console.print(
        f"[bold]point-to-point[/], ResNet-50 at {p['input_size']}x{p['input_size']}, "
        f"{p['pairs']} pairs per call: {p['images_per_s']:.1f} images/s "
        f"({p['pairs_per_s']:.1f} pairs/s), {p['over_forward']:.2f}x the time of an inference "
        "forward of the same images"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Speed of pair and point-to-point explanations.")
    parser.add_argument("--quick", action="store_true", help="tiny batches, two repeats")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, help="timed repeats (default 7, quick 2)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 7)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    result = run(args.models, args.quick, repeats, torch.device(args.device))
    print_tables(result)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
