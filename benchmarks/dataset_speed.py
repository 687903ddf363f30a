"""Throughput and memory of ``explain_dataset`` against a plain embedding pass over the same loader.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/dataset_speed.py [--quick] [--json PATH] [--profile]

Two measurements, both on CPU:

1. **Throughput ratio.** Images per second of
   [`embedcam.explain_dataset`][embedcam.pipeline.explain_dataset] (one recipe: centroid target,
   native Grad-CAM at the model's last conv block; records written as Parquet part files to a fresh
   temporary folder, ``maps="none"``) divided by images per second of a plain embedding pass
   (``with torch.inference_mode(): model(images)``) over the *same* DataLoader: a synthetic shelf
   export ([`embedcam.datasets.generate_shelf`][embedcam.datasets.synthetic.generate_shelf], JPEG
   files on disk) read by
   [`embedcam.datasets.ImageDataset`][embedcam.datasets.torch_dataset.ImageDataset] with
   [`collate_boxes`][embedcam.datasets.torch_dataset.collate_boxes], so every image is decoded and
   resized and carries its boxes (the records then hold every box score and the judge's verdict, the
   realistic case). Same dataset, batch size and workers for both; the two passes are interleaved
   (alternating order) after one warm-up each, and the figure is the median of the repeats. Models:
   the paper CNN (width 1.0, 128 x 128, batch 32, ``features.block4.relu``) and a randomly
   initialised torchvision ResNet-50 with a 128-d head (224 x 224, batch 16, ``layer4``). Also
   reported: the median of each repeat's paired ratio and the ratio of CPU seconds. ``--profile``
   adds a cProfile breakdown of one ``explain_dataset`` call per model (where the time goes beyond
   the CAM itself) and a per-batch timing of its steps, interleaved batch by batch (robust to load
   on a shared machine).
2. **Memory does not grow with the dataset.** In a fresh subprocess, ``explain_dataset`` runs
   over 20,480 images made deterministically in ``__getitem__`` (no files), with a small paper
   CNN (width 0.25, 64 x 64); the dataset records the process's resident set (``VmRSS``) and
   its peak so far (``VmHWM``) every 1024 images, and once more after the call returns.

The JSON keys are documented in benchmarks/README.md (section "explain_dataset throughput and
memory"). Timings are never asserted; the test suite runs ``--quick`` and checks the schema.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from speed import cpu_model, write_json  # noqa: E402  (one atomic JSON writer for the benchmarks)

SCHEMA = "embedcam.dataset_speed/1"
TARGET_RATIO = 0.8

# per model: input size, batch, images per pass (full), and the same three for --quick
MODELS: dict[str, dict[str, int]] = {
    "paper_cnn": {
        "size": 128,
        "batch": 32,
        "images": 320,
        "q_size": 128,
        "q_batch": 8,
        "q_images": 16,
    },
    "resnet50": {
        "size": 224,
        "batch": 16,
        "images": 96,
        "q_size": 64,
        "q_batch": 2,
        "q_images": 4,
    },
}

# memory run: images, checkpoint interval, reference checkpoint, batch, input size
MEMORY = {"images": 20480, "every": 1024, "reference": 4096, "batch": 64, "size": 64}
MEMORY_QUICK = {"images": 384, "every": 64, "reference": 128, "batch": 32, "size": 32}


# --------------------------------------------------------------------------- models and data


def build_model(name: str, size: int) -> tuple[nn.Module, str]:
    """The model (random weights, eval mode) and the dotted name of its CAM layer."""
    torch.manual_seed(0)
    if name == "paper_cnn":
        from paper_sku.model import PaperCNN

        model = PaperCNN(width=1.0, in_size=size)
        return model.eval(), model.cam_layer_name
    if name == "resnet50":
        import torchvision

        model = torchvision.models.resnet50(weights=None, num_classes=128)
        return model.eval(), "layer4"
    raise SystemExit(f"unknown model {name!r}; choose one of {sorted(MODELS)}")


def shelf_index(cache: Path, n_images: int, source_size: int) -> Any:
    """A synthetic shelf export of at least ``n_images`` JPEGs (train split), cached on disk."""
    from embedcam.datasets import ShelfConfig, generate_shelf

    per_class = max(math.ceil(n_images / 10), 1)
    config = ShelfConfig(
        image_size=source_size,
        families=5,
        siblings=2,
        images_per_class={"train": per_class},
        shortcut={"train": 0.9},
        image_format="jpg",
        seed=0,
    )
    return generate_shelf(cache / f"shelf-{source_size}-{per_class}", config, if_exists="reuse")


def make_loader(index: Any, size: int, batch: int, n_images: int, workers: int) -> Any:
    """DataLoader over the first ``n_images`` shelf images: decode, resize, boxes."""
    from embedcam.datasets import ImageDataset, collate_boxes

    train = index.split("train")
    # the first n_images samples, as an index of their own: explain_dataset then sees an
    # ImageDataset (file paths become the records' ids), as in a user's run
    head = train.model_copy(update={"samples": train.samples[:n_images]})
    dataset = ImageDataset(head, size=size, with_boxes=True, with_masks=False)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate_boxes
    )


# --------------------------------------------------------------------------- the two passes


def embed_pass(model: nn.Module, loader: Any) -> int:
    """The floor: a plain inference forward over every batch of the loader; returns images."""
    n = 0
    for batch in loader:
        with torch.inference_mode():
            model(batch["image"])
        n += int(batch["image"].shape[0])
    return n


def explain_pass(
    model: nn.Module, loader: Any, centroids: Any, recipe: Any, scratch: Path
) -> tuple[int, int]:
    """``explain_dataset`` into a fresh folder (a reused one would resume: nothing to do)."""
    import embedcam as ec

    out = Path(tempfile.mkdtemp(prefix="records-", dir=scratch))
    try:
        recs = ec.explain_dataset(
            model, loader, centroids, recipe, out=out, maps="none", progress=False
        )
        return recs.images, recs.rows
    finally:
        shutil.rmtree(out, ignore_errors=True)


def time_model(
    name: str, quick: bool, repeats: int, workers: int, cache: Path, scratch: Path, source_size: int
) -> dict[str, Any]:
    """Interleaved, median images/s of the embedding pass and explain_dataset on one model."""
    import embedcam as ec

    spec = MODELS[name]
    size = spec["q_size"] if quick else spec["size"]
    batch = spec["q_batch"] if quick else spec["batch"]
    n = spec["q_images"] if quick else spec["images"]
    index = shelf_index(cache, n, source_size)
    model, layer = build_model(name, size)
    loader = make_loader(index, size, batch, n, workers)
    warm = make_loader(index, size, batch, batch, workers)  # one batch: imports, allocator
    centroids = ec.ClassCentroids.fit(model, loader, progress=False, allow_empty=True)
    recipe = ec.Recipe(layer=layer, target="centroid", method="gradcam")
    embed_pass(model, warm)
    explain_pass(model, warm, centroids, recipe, scratch)
    times: dict[str, list[float]] = {"embed": [], "explain": []}
    cpu: dict[str, list[float]] = {"embed": [], "explain": []}
    rows = 0
    for r in range(repeats):
        order = ["embed", "explain"] if r % 2 == 0 else ["explain", "embed"]
        for what in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            if what == "embed":
                seen = embed_pass(model, loader)
            else:
                seen, rows = explain_pass(model, loader, centroids, recipe, scratch)
            times[what].append(time.perf_counter() - start)
            cpu[what].append(time.process_time() - start_cpu)
            assert seen == len(loader.dataset), (what, seen, len(loader.dataset))
    passes = {}
    for what, ts in times.items():
        med = statistics.median(ts)
        passes[what] = {
            "times_s": ts,
            "median_s": med,
            "images_per_s": n / med,
            "cpu_times_s": cpu[what],
            "median_cpu_s": statistics.median(cpu[what]),
        }
    ratio = passes["explain"]["images_per_s"] / passes["embed"]["images_per_s"]
    # Contention-robust cross-checks: the ratio of each repeat's two adjacent passes (median
    # over repeats), and the ratio of median CPU seconds of this process (all its threads).
    paired = statistics.median(e / x for e, x in zip(times["embed"], times["explain"]))
    ratio_cpu = passes["embed"]["median_cpu_s"] / passes["explain"]["median_cpu_s"]
    rec: dict[str, Any] = {
        "input_size": size,
        "batch": batch,
        "images": n,
        "layer": layer,
        "recipe": recipe.name,
        "rows": rows,
        "num_workers": workers,
        "embed": passes["embed"],
        "explain": passes["explain"],
        "ratio": ratio,
        "paired_ratio": paired,
        "cpu_ratio": ratio_cpu,
        "target_met": ratio >= TARGET_RATIO,
    }
    rec["_objects"] = (model, loader, centroids, recipe)
    return rec


# --------------------------------------------------------------------------- profile

# (label, file suffix, function name): cumulative time of these functions inside explain_dataset
_PROFILE_PARTS = (
    ("data loading (DataLoader.__next__)", "torch/utils/data/dataloader.py", "__next__"),
    ("CAM: EmbeddingCAM.__call__ (forward + backward)", "embedcam/cam/core.py", "__call__"),
    ("make_target", "embedcam/recipe.py", "make_target"),
    ("boxes_to_masks", "embedcam/boxes.py", "boxes_to_masks"),
    ("score_maps", "embedcam/scoring/records.py", "score_maps"),
    ("box_map_ceiling", "embedcam/scoring/scores.py", "box_map_ceiling"),
    ("judge", "embedcam/scoring/judge.py", "judge_features"),
    ("parquet: _Writer.flush", "embedcam/pipeline.py", "flush"),
    ("rows: _Writer.add", "embedcam/pipeline.py", "add"),
    ("setup: _model_digest", "embedcam/pipeline.py", "_model_digest"),
    ("setup: _prepare_out", "embedcam/pipeline.py", "_prepare_out"),
    ("setup: _data_digest", "embedcam/pipeline.py", "_data_digest"),
    ("setup: sample_paths", "embedcam/_loaders.py", "sample_paths"),
    ("setup: subset_loader", "embedcam/_loaders.py", "subset_loader"),
)


def _cumulative(stats: pstats.Stats, suffix: str, func: str) -> float:
    total = 0.0
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if name == func and filename.replace(os.sep, "/").endswith(suffix):
            total += ct
    return total


def profile_explain(
    model: nn.Module, loader: Any, centroids: Any, recipe: Any, scratch: Path
) -> dict[str, Any]:
    """Where the time of one explain_dataset call goes (cProfile, cumulative seconds)."""
    start = time.perf_counter()
    embed_pass(model, loader)
    embed_s = time.perf_counter() - start
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    explain_pass(model, loader, centroids, recipe, scratch)
    prof.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(prof)
    total = _cumulative(stats, "embedcam/pipeline.py", "explain_dataset") or wall
    parts = {label: _cumulative(stats, suffix, func) for label, suffix, func in _PROFILE_PARTS}
    batch_s = _cumulative(stats, "embedcam/pipeline.py", "_explain_batch")
    inner = sum(
        parts[k]
        for k in parts
        if k.startswith(("CAM", "make_target", "boxes_to", "score_maps", "box_map", "judge"))
    )
    parts["rows: rest of _explain_batch (tensor -> list, dicts)"] = max(batch_s - inner, 0.0)
    parts["other"] = max(total - sum(parts.values()), 0.0)
    top = sorted(
        (
            (ct, tt, f"{Path(fn).name}:{ln}({name})")
            for (fn, ln, name), (_c, _n, tt, ct, _cl) in stats.stats.items()
        ),  # type: ignore[attr-defined]
        reverse=True,
    )[:25]
    return {
        "wall_s": wall,
        "explain_dataset_s": total,
        "embed_pass_s": embed_s,
        "parts_s": parts,
        "parts_pct": {k: 100.0 * v / total for k, v in parts.items()},
        "top_cumulative": [{"function": f, "cumulative_s": ct, "own_s": tt} for ct, tt, f in top],
    }


def time_components(
    model: nn.Module, loader: Any, centroids: Any, recipe: Any, repeats: int
) -> dict[str, Any]:
    """Median ms per batch of each step of both passes, interleaved batch by batch.

    Whole passes take seconds to minutes, so load from other processes on a shared machine
    lands on some passes and not others; these steps take milliseconds and run back to back
    in a rotating order, so they see the same conditions. The steps mirror explain_dataset's
    per-batch work through the public API: the CAM (same engine and target), boxes to masks,
    ``score_maps`` (no AUC), ``box_map_ceiling`` (when the installed embedcam has it) and the
    default judge. ``predicted_ratio`` = (load + forward) / (load + CAM + scoring): the ratio
    explain_dataset would reach if its only costs were these steps.
    """
    import embedcam as ec
    from embedcam import scoring

    cam = recipe.cam(model)
    judge = ec.Judge()
    cents = centroids.centroids if hasattr(centroids, "centroids") else centroids
    start = time.perf_counter()
    batches = list(loader)
    load_s = (time.perf_counter() - start) / len(batches)
    batches = batches[: min(4, len(batches))]
    ceiling = getattr(scoring, "box_map_ceiling", None)

    def target(b: dict[str, Any]) -> Any:
        return recipe.make_target(cents, b["label"])

    def forward(b: dict[str, Any]) -> None:
        with torch.inference_mode():
            model(b["image"])

    results = [cam(b["image"], target(b)) for b in batches]
    size = tuple(batches[0]["image"].shape[-2:])
    regions = [ec.boxes_to_masks(b["boxes"], size=size) for b in batches]
    steps: dict[str, Any] = {
        "forward": lambda i: forward(batches[i]),
        "cam": lambda i: cam(batches[i]["image"], target(batches[i])),
        "boxes_to_masks": lambda i: ec.boxes_to_masks(batches[i]["boxes"], size=size),
        "score_maps": lambda i: scoring.score_maps(results[i].maps, regions[i], auc=False),
        "judge": lambda i: judge(results[i].maps, regions[i]),
    }
    if ceiling is not None:
        steps["box_map_ceiling"] = lambda i: ceiling(
            regions[i], grid=tuple(results[i].raw.shape[-2:])
        )
    times: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for r in range(repeats):
        for i in range(len(batches)):
            k = (r * len(batches) + i) % len(names)
            for name in names[k:] + names[:k]:
                t0 = time.perf_counter()
                steps[name](i)
                times[name].append(time.perf_counter() - t0)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    ms["data_loading"] = 1000 * load_s
    scoring_ms = sum(v for k, v in ms.items() if k not in ("forward", "cam", "data_loading"))
    embed = ms["data_loading"] + ms["forward"]
    explain = ms["data_loading"] + ms["cam"] + scoring_ms
    return {
        "batch": int(batches[0]["image"].shape[0]),
        "samples_per_step": len(times["forward"]),
        "ms_per_batch": ms,
        "scoring_ms_per_batch": scoring_ms,
        "cam_over_forward_time": ms["cam"] / ms["forward"],
        "predicted_ratio": embed / explain,
        "scoring_share_of_explain_pct": 100 * scoring_ms / explain,
        "loading_share_of_embed_pct": 100 * ms["data_loading"] / embed,
    }


# --------------------------------------------------------------------------- memory (subprocess)


def _status_kb(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    if field == "VmHWM":
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return 0


def _rss_mb() -> tuple[float, float]:
    """(current resident set, its peak so far) of this process in MB."""
    try:
        import psutil  # optional

        rss = psutil.Process().memory_info().rss / 2**20
    except ImportError:
        rss = _status_kb("VmRSS") / 1024
    return rss, _status_kb("VmHWM") / 1024


class GeneratedShelf(torch.utils.data.Dataset):
    """Images made deterministically in ``__getitem__`` (no files), each with one box.

    Every ``every`` items (and so every few batches with ``num_workers=0``) it records how many
    images it has handed out and the process's resident set: the memory curve of the run.
    """

    def __init__(self, n: int, size: int, every: int, classes: int = 10) -> None:
        self.n, self.size, self.every, self.classes = n, size, every, classes
        self.curve: list[dict[str, float]] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i % self.every == 0:
            rss, hwm = _rss_mb()
            self.curve.append({"images": i, "rss_mb": rss, "peak_mb": hwm})
        gen = torch.Generator().manual_seed(i)
        s = self.size
        image = torch.rand(3, s, s, generator=gen)
        xy = torch.rand(2, generator=gen) * (s / 2)
        wh = s / 4 + torch.rand(2, generator=gen) * (s / 4)
        box = torch.cat([xy, xy + wh]).clamp(max=s)[None]
        return {"image": image, "label": i % self.classes, "index": i, "boxes": box}


def memory_child(quick: bool, workdir: Path) -> dict[str, Any]:
    """Run explain_dataset over a generated dataset in this (fresh) process; the RSS curve."""
    from paper_sku.model import PaperCNN

    import embedcam as ec
    from embedcam.datasets import collate_boxes

    cfg = MEMORY_QUICK if quick else MEMORY
    torch.manual_seed(0)
    model = PaperCNN(width=0.25, in_size=cfg["size"]).eval()
    dataset = GeneratedShelf(cfg["images"], cfg["size"], cfg["every"])
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg["batch"], shuffle=False, num_workers=0, collate_fn=collate_boxes
    )
    centroids = torch.nn.functional.normalize(torch.randn(10, model.embedding_dim), dim=1)
    recipe = ec.Recipe(layer=model.cam_layer_name, target="centroid", method="gradcam")
    start_rss, start_hwm = _rss_mb()
    start = time.perf_counter()
    out = workdir / "records"
    recs = ec.explain_dataset(
        model, loader, centroids, recipe, out=out, maps="none", progress=False
    )
    seconds = time.perf_counter() - start
    end_rss, end_hwm = _rss_mb()
    curve = [{"images": 0, "rss_mb": start_rss, "peak_mb": start_hwm}, *dataset.curve[1:]]
    curve.append({"images": recs.images, "rss_mb": end_rss, "peak_mb": end_hwm})
    ref = next(c for c in curve if c["images"] >= cfg["reference"])
    end = curve[-1]
    # RSS wobbles by a few % from checkpoint to checkpoint (allocator, part buffers): compare
    # medians over an early window (reference / 2 .. 1.5 x reference) and the last fifth too.
    r = cfg["reference"]
    early = [c for c in curve if r // 2 <= c["images"] <= r + r // 2]
    late = [c for c in curve if c["images"] >= 0.8 * recs.images]
    early_med = statistics.median(c["rss_mb"] for c in early)
    late_med = statistics.median(c["rss_mb"] for c in late)
    return {
        "images": recs.images,
        "rows": recs.rows,
        "parts": len(list(out.glob("part-*.parquet"))),
        "batch": cfg["batch"],
        "input_size": cfg["size"],
        "model": "PaperCNN(width=0.25)",
        "seconds": seconds,
        "images_per_s": recs.images / seconds,
        "curve": curve,
        "reference_images": ref["images"],
        "rss_growth_pct": 100.0 * (end["rss_mb"] - ref["rss_mb"]) / ref["rss_mb"],
        "peak_growth_pct": 100.0 * (end["peak_mb"] - ref["peak_mb"]) / ref["peak_mb"],
        "early_window_images": [c["images"] for c in early],
        "late_window_images": [c["images"] for c in late],
        "early_median_rss_mb": early_med,
        "late_median_rss_mb": late_med,
        "median_rss_growth_pct": 100.0 * (late_med - early_med) / early_med,
        "rss_method": "psutil" if _has_psutil() else "VmRSS",
    }


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def measure_memory(quick: bool, threads: int, scratch: Path) -> dict[str, Any]:
    """The memory curve, from a fresh subprocess."""
    workdir = Path(tempfile.mkdtemp(prefix="memory-", dir=scratch))
    cmd = [sys.executable, __file__, "--memory-child", str(workdir), "--threads", str(threads)]
    if quick:
        cmd.append("--quick")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"memory child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report


def machine_info(workers: int) -> dict[str, Any]:
    """CPU model, cores, threads and versions."""
    cpu = cpu_model()
    import pyarrow

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "num_workers": workers,
        "torch": torch.__version__,
        "pyarrow": pyarrow.__version__,
        "python": platform.python_version(),
        "device": "cpu",
        "load_avg_1min_start": os.getloadavg()[0],
    }


def print_tables(result: dict[str, Any]) -> None:
    """Rich tables of the run."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)  # no wrapping in logs
    m = result["machine"]
    console.print(
        f"[bold]machine[/]: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads "
        f"(OMP_NUM_THREADS={m['omp_num_threads']}), {m['num_workers']} loader workers, "
        f"torch {m['torch']}, pyarrow {m['pyarrow']}; load average (1 min) "
        f"{m['load_avg_1min_start']:.1f} at start, {m.get('load_avg_1min_end', float('nan')):.1f} "
        "at end"
    )
    table = Table(
        title=f"explain_dataset vs plain embedding pass, same loader, median of "
        f"{result['settings']['repeats']} interleaved repeats"
    )
    for col in (
        "model",
        "input",
        "batch",
        "images",
        "embed img/s",
        "explain img/s",
        "ratio",
        ">= 0.8",
        "paired ratio",
        "CPU-time ratio",
    ):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, rec in result["models"].items():
        table.add_row(
            name,
            f"{rec['input_size']}",
            f"{rec['batch']}",
            f"{rec['images']}",
            f"{rec['embed']['images_per_s']:.1f}",
            f"{rec['explain']['images_per_s']:.1f}",
            f"{rec['ratio']:.2f}",
            "yes" if rec["target_met"] else "no",
            f"{rec['paired_ratio']:.2f}",
            f"{rec['cpu_ratio']:.2f}",
        )
    console.print(table)
    for name, rec in result["models"].items():
        prof = rec.get("profile")
        if not prof:
            continue
        t = Table(
            title=f"{name}: one explain_dataset call under cProfile, "
            f"{prof['explain_dataset_s']:.1f} s (plain embedding pass "
            f"{prof['embed_pass_s']:.1f} s, not profiled)"
        )
        t.add_column("part")
        t.add_column("s", justify="right")
        t.add_column("%", justify="right")
        for k, v in prof["parts_s"].items():
            t.add_row(k, f"{v:.2f}", f"{prof['parts_pct'][k]:.1f}")
        console.print(t)
        comp = rec.get("components")
        if comp:
            steps = ", ".join(f"{k} {v:.1f}" for k, v in comp["ms_per_batch"].items())
            console.print(
                f"  {name}, interleaved per-batch steps (median ms per batch of {comp['batch']}): "
                f"{steps}; CAM / forward time {comp['cam_over_forward_time']:.2f}, scoring "
                f"{comp['scoring_share_of_explain_pct']:.1f} % of explain, predicted ratio "
                f"{comp['predicted_ratio']:.2f}"
            )
    mem = result.get("memory")
    if mem:
        t = Table(
            title=f"memory: explain_dataset over {mem['images']} generated {mem['input_size']} px "
            f"images, {mem['model']}, batch {mem['batch']}, {mem['parts']} part files, "
            f"{mem['images_per_s']:.0f} img/s"
        )
        for col in ("images", "RSS MB", "peak RSS MB"):
            t.add_column(col, justify="right")
        for c in mem["curve"]:
            t.add_row(f"{c['images']}", f"{c['rss_mb']:.1f}", f"{c['peak_mb']:.1f}")
        console.print(t)
        console.print(
            f"  from {mem['reference_images']} to {mem['images']} images: RSS "
            f"{mem['rss_growth_pct']:+.1f} %, peak RSS {mem['peak_growth_pct']:+.1f} %; median RSS "
            f"at {mem['late_window_images'][0]}-{mem['late_window_images'][-1]} vs "
            f"{mem['early_window_images'][0]}-{mem['early_window_images'][-1]} images: "
            f"{mem['median_rss_growth_pct']:+.1f} %"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="explain_dataset throughput vs a plain embedding pass, and its memory."
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--repeats", type=int, help="timed repeats per pass (default 5, quick 1)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader num_workers (both passes)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--source-size", type=int, default=256, help="side of the JPEGs on disk")
    parser.add_argument("--profile", action="store_true", help="cProfile one explain_dataset call")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocess")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "dataset_speed")
    parser.add_argument("--memory-child", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.quick, args.memory_child)))
        return 0

    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    args.cache.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "machine": machine_info(args.workers),
        "settings": {
            "quick": args.quick,
            "repeats": repeats,
            "source_size": args.source_size,
            "maps": "none",
            "target_ratio": TARGET_RATIO,
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="dataset_speed-") as tmp:
        scratch = Path(tmp)
        for name in args.models:
            rec = time_model(
                name, args.quick, repeats, args.workers, args.cache, scratch, args.source_size
            )
            objects = rec.pop("_objects")
            if args.profile:
                rec["profile"] = profile_explain(*objects, scratch)
                rec["components"] = time_components(*objects, repeats=5 if not args.quick else 1)
            result["models"][name] = rec
            del objects
        if not args.no_memory:
            result["memory"] = measure_memory(args.quick, args.threads, scratch)
    result["machine"]["load_avg_1min_end"] = os.getloadavg()[0]
    print_tables(result)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
