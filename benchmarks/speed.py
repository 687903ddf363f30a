"""Speed and memory of embedding CAMs: embedcam's native engine against pytorch-grad-cam and Captum.

Usage::

    python benchmarks/speed.py [--quick] [--json PATH] [--device cpu|cuda]
    python benchmarks/speed.py --gradcam-overhead [--repeats N] [--json PATH]

Measures, in one process with interleaved repeats and medians, images per second of a plain
inference forward (the floor), embedcam's native Grad-CAM / Grad-CAM++ / HiResCAM, embedcam's
grad-cam and captum backends, pytorch-grad-cam used as its README and embeddings tutorial show
(per-sample similarity targets, ``GradCAM(...)(input_tensor, targets)``) and Captum
``LayerGradCam`` with a per-sample cosine forward and bilinear interpolation; on the paper CNN
(128x128, batch 32) and a randomly initialised torchvision ResNet-50 (224x224, batch 16). Peak
memory is measured per configuration in a fresh subprocess, as the extra over the process's
resident memory before the call (CPU: VmHWM after resetting it; CUDA: max_memory_allocated).
Also: end-to-end explain throughput on a synthetic shelf dataset (centroids + CAMs + scores) and
scoring throughput. The JSON keys are documented in benchmarks/README.md.

``--gradcam-overhead`` measures only the cost of embedcam's ``grad-cam`` adapter: pytorch-grad-cam
called directly with a per-sample cosine target to one fixed reference vector (a persistent
instance, and one per call as in a ``with`` block), embedcam's ``backend="grad-cam"`` and
``backend="native"`` with the equivalent ``ReferenceTarget``; interleaved, medians, one process.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embedcam.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

SCHEMA = "embedcam.speed/1"

CONFIGS = [
    "forward",
    "native-gradcam",
    "native-gradcam++",
    "native-hirescam",
    "embedcam-grad-cam",
    "embedcam-captum",
    "pgc-gradcam",
    "pgc-gradcam++",
    "captum-gradcam",
]

# (input size, full batch, quick batch)
MODELS = {
    "paper_cnn": (128, 32, 8),
    "resnet50": (224, 16, 2),
}


# --------------------------------------------------------------------------- models and configs


def build_model(name: str) -> tuple[nn.Module, nn.Module]:
    """The model (random weights, eval mode) and its CAM layer."""
    torch.manual_seed(0)
    if name == "paper_cnn":
        from paper_sku.model import PaperCNN

        model = PaperCNN(width=1.0, in_size=128)
        return model.eval(), model.cam_layer
    if name == "resnet50":
        import torchvision

        model = torchvision.models.resnet50(weights=None, num_classes=128)
        return model.eval(), model.layer4
    raise SystemExit(f"unknown model {name!r}; choose one of {sorted(MODELS)}")


class _Similarity:
    """A per-sample cosine target in the form pytorch-grad-cam's embeddings tutorial uses."""

    def __init__(self, reference: torch.Tensor) -> None:
        self.reference = reference

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(output, self.reference, dim=0)


def build_runner(
    config: str, model: nn.Module, layer: nn.Module, images: torch.Tensor
) -> Callable[[], Any]:
    """A zero-argument callable that runs one configuration on the batch."""
    import embedcam as ec

    torch.manual_seed(1)
    with torch.inference_mode():
        dim = model(images[:1]).shape[1]
    cents = torch.randn(10, dim, device=images.device)
    labels = torch.arange(images.shape[0], device=images.device) % 10
    target = ec.CentroidTarget(cents, labels)
    refs = cents[labels]
    size = tuple(images.shape[-2:])

    if config == "forward":

        def run() -> Any:
            with torch.inference_mode():
                return model(images)

        return run
    if config.startswith("native-"):
        cam = ec.EmbeddingCAM(model, layer, method=config.removeprefix("native-"))
        return lambda: cam(images, target)
    if config.startswith("embedcam-"):
        cam = ec.EmbeddingCAM(
            model, layer, method="gradcam", backend=config.removeprefix("embedcam-")
        )
        return lambda: cam(images, target)
    if config.startswith("pgc-"):
        import pytorch_grad_cam

        cls = (
            pytorch_grad_cam.GradCAM
            if config == "pgc-gradcam"
            else pytorch_grad_cam.GradCAMPlusPlus
        )
        pgc = cls(model=model, target_layers=[layer])
        targets = [_Similarity(r) for r in refs]

        def run() -> Any:
            out = pgc(input_tensor=images, targets=targets)
            # The library leaves parameter gradients behind; drop them so repeats stay comparable.
            model.zero_grad(set_to_none=True)
            return out

        return run
    if config == "captum-gradcam":
        from captum.attr import LayerAttribution, LayerGradCam

        def forward(x: torch.Tensor) -> torch.Tensor:
            return F.cosine_similarity(model(x), refs, dim=1)

        algo = LayerGradCam(forward, layer)

        def run() -> Any:
            attr = algo.attribute(images, relu_attributions=True)
            return LayerAttribution.interpolate(attr, size, interpolate_mode="bilinear")

        return run
    raise SystemExit(f"unknown config {config!r}; choose one of {CONFIGS}")


def make_images(name: str, batch: int, device: torch.device) -> torch.Tensor:
    """A seeded random batch of the model's input size."""
    size = MODELS[name][0]
    gen = torch.Generator().manual_seed(2)
    return torch.randn(batch, 3, size, size, generator=gen).to(device)


# --------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_configs(
    runners: dict[str, Callable[[], Any]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of every runner, interleaved: each repeat runs every config once.

    The order rotates from repeat to repeat, so no config always runs first (cache, frequency
    and background-load effects spread evenly).
    """
    names = list(runners)
    for name in names:  # warm-up: lazy imports, kernel selection, allocator growth
        runners[name]()
    _sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            runners[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


# --------------------------------------------------------------------------- memory (subprocess)


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_child(model_name: str, config: str, batch: int, device: str) -> dict[str, float]:
    """Run one configuration once in this (fresh) process; return base and peak memory in MB."""
    dev = torch.device(device)
    model, layer = build_model(model_name)
    model.to(dev)
    images = make_images(model_name, batch, dev)
    run = build_runner(config, model, layer, images)
    # Warm up on one image, so one-time kernel and import allocations are not counted.
    build_runner(config, model, layer, images[:1])()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        run()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        return {"base_mb": base / 2**20, "peak_mb": peak / 2**20, "method": "cuda"}
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed heap to the OS before the base
    except OSError:
        pass
    base_kb = _status_kb("VmRSS") or 0
    method = "VmHWM"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    except OSError:
        method = "ru_maxrss"
    run()
    if method == "VmHWM":
        peak_kb = _status_kb("VmHWM") or 0
    else:
        import resource

        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"base_mb": base_kb / 1024, "peak_mb": peak_kb / 1024, "method": method}


def measure_memory(model_name: str, configs: list[str], batch: int, device: str) -> dict[str, Any]:
    """Extra peak memory of each config, each in a fresh subprocess."""
    procs = {}
    for config in configs:
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            model_name,
            config,
            "--batch",
            str(batch),
            "--device",
            device,
        ]
        # Children run concurrently: each measures its own process's memory, and only the wall
        # time (not reported) suffers. On CUDA they would share the device, so run them in turn.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if device.startswith("cuda"):
            proc.wait()
        procs[config] = proc
    out: dict[str, Any] = {}
    for config, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"memory child {model_name}/{config} failed:\n{stderr[-2000:]}")
        rec = json.loads(stdout.strip().splitlines()[-1])
        rec["extra_mb"] = max(rec["peak_mb"] - rec["base_mb"], 0.0)
        out[config] = rec
    return out


# --------------------------------------------------------------------------- end to end, scoring


def end_to_end(n_images: int, batch: int, device: torch.device, cache: Path) -> dict[str, Any]:
    """Centroids + native Grad-CAM + all scores but AUC over a synthetic shelf dataset."""
    from paper_sku.model import PaperCNN

    import embedcam as ec
    from embedcam.datasets import ImageDataset, ShelfConfig, collate_boxes, generate_shelf

    per_class = max(n_images // 10, 1)
    config = ShelfConfig(
        image_size=128,
        families=5,
        siblings=2,
        images_per_class={"train": per_class},
        shortcut={"train": 0.9},
        seed=0,
    )
    t0 = time.perf_counter()
    index = generate_shelf(cache / f"shelf-{per_class}", config, if_exists="reuse")
    t_data = time.perf_counter() - t0
    dataset = ImageDataset(index, size=128, split="train", with_boxes=True, with_masks=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, collate_fn=collate_boxes)
    torch.manual_seed(0)
    model = PaperCNN(width=1.0, in_size=128).to(device).eval()
    cam = ec.EmbeddingCAM(model, model.cam_layer, method="gradcam")
    t0 = time.perf_counter()
    cents = ec.ClassCentroids.fit(model, loader, progress=False)
    t_cent = time.perf_counter() - t0
    t_cam = t_score = 0.0
    energy = []
    t0 = time.perf_counter()
    for b in loader:
        images, labels = b["image"].to(device), b["label"].to(device)
        s = time.perf_counter()
        res = cam(images, ec.CentroidTarget(cents.centroids, labels))
        _sync(device)
        t_cam += time.perf_counter() - s
        s = time.perf_counter()
        regions = ec.boxes_to_masks([bx.to(device) for bx in b["boxes"]], size=(128, 128))
        scores = ec.scoring.score_maps(res.maps, regions, auc=False)
        energy.append(scores.energy_in_box)
        t_score += time.perf_counter() - s
    t_loop = time.perf_counter() - t0
    n = len(dataset)
    total = t_cent + t_loop
    return {
        "images": n,
        "batch": batch,
        "generate_or_reuse_s": t_data,
        "centroids_s": t_cent,
        "cam_s": t_cam,
        "scoring_s": t_score,
        "loop_s": t_loop,
        "images_per_s": n / total,
        "mean_energy_in_box": float(torch.cat(energy).nanmean()),
    }


def scoring_throughput(n_maps: int, chunk: int, device: torch.device) -> dict[str, Any]:
    """Maps per second of ``score_maps`` (all scores but AUC) on random 128x128 maps and boxes."""
    import embedcam as ec

    gen = torch.Generator().manual_seed(3)
    maps = torch.rand(chunk, 128, 128, generator=gen).to(device)
    xy = torch.rand(chunk, 2, generator=gen) * 80
    wh = 16 + torch.rand(chunk, 2, generator=gen) * 40
    boxes = [torch.cat([p, p + s])[None].to(device) for p, s in zip(xy, wh)]
    regions = ec.boxes_to_masks(boxes, size=(128, 128))
    ec.scoring.score_maps(maps[:8], regions[:8], auc=False)
    times = []
    done = 0
    start = time.perf_counter()
    while done < n_maps:
        s = time.perf_counter()
        ec.scoring.score_maps(maps, regions, auc=False)
        _sync(device)
        times.append(time.perf_counter() - s)
        done += chunk
    total = time.perf_counter() - start
    return {"maps": done, "chunk": chunk, "seconds": total, "maps_per_s": done / total}


# ------------------------------------------------------------------ grad-cam adapter overhead

OVERHEAD_SCHEMA = "embedcam.speed.gradcam-overhead/1"

OVERHEAD_CONFIGS = ["pgc-direct", "pgc-direct-with", "embedcam-grad-cam", "embedcam-native"]


def build_overhead_runners(
    model: nn.Module, layer: nn.Module, images: torch.Tensor
) -> dict[str, Callable[[], Any]]:
    """Grad-CAM of the cosine to one fixed reference vector, four ways, on the same batch.

    * ``pgc-direct``: one ``pytorch_grad_cam.GradCAM`` kept across calls (what a script that
      builds it once does); the instance keeps its last graph (``retain_graph=True``) alive in
      ``.outputs`` until the next call.
    * ``pgc-direct-with``: a new instance per call in a ``with`` block (the library's README
      pattern), so the graph is freed after each call, as embedcam's adapter does.
    * ``embedcam-grad-cam``, ``embedcam-native``: ``EmbeddingCAM`` with ``ReferenceTarget(ref)``.

    Every pytorch-grad-cam target is a per-sample callable ``cos(output_i, ref)``.
    """
    import pytorch_grad_cam

    import embedcam as ec

    torch.manual_seed(1)
    with torch.inference_mode():
        dim = model(images[:1]).shape[1]
    ref = torch.randn(dim, device=images.device)
    targets = [_Similarity(ref) for _ in range(images.shape[0])]
    target = ec.ReferenceTarget(ref)
    persistent = pytorch_grad_cam.GradCAM(model=model, target_layers=[layer])
    adapter = ec.EmbeddingCAM(model, layer, method="gradcam", backend="grad-cam")
    native = ec.EmbeddingCAM(model, layer, method="gradcam")

    def direct() -> Any:
        out = persistent(input_tensor=images, targets=targets)
        model.zero_grad(set_to_none=True)  # the library leaves parameter gradients behind
        return out

    def direct_with() -> Any:
        with pytorch_grad_cam.GradCAM(model=model, target_layers=[layer]) as cam:
            out = cam(input_tensor=images, targets=targets)
        model.zero_grad(set_to_none=True)
        return out

    return {
        "pgc-direct": direct,
        "pgc-direct-with": direct_with,
        "embedcam-grad-cam": lambda: adapter(images, target),
        "embedcam-native": lambda: native(images, target),
    }


def _rusage() -> tuple[float, int]:
    """(system CPU seconds, minor page faults) of this process so far; zeros where unavailable."""
    try:
        import resource
    except ImportError:  # not on Unix
        return 0.0, 0
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_stime, u.ru_minflt


def gradcam_overhead(
    names: list[str], repeats: int, quick: bool, device: torch.device
) -> dict[str, Any]:
    """Time `build_overhead_runners` per model: interleaved, rotating order, medians.

    Besides wall time, every call's system CPU time and minor page faults are recorded: freeing a
    whole-network graph after a call and faulting the memory back in on the next one shows up
    there, not in the user CPU time.
    """
    out: dict[str, Any] = {}
    for name in names:
        size, full, small = MODELS[name]
        batch = small if quick else full
        model, layer = build_model(name)
        model.to(device)
        images = make_images(name, batch, device)
        runners = build_overhead_runners(model, layer, images)
        for run in runners.values():  # warm-up
            run()
        _sync(device)
        rec: dict[str, dict[str, list[float]]] = {
            c: {"times_s": [], "sys_s": [], "minor_faults": []} for c in runners
        }
        configs = list(runners)
        for r in range(repeats):
            for c in configs[r % len(configs) :] + configs[: r % len(configs)]:
                _sync(device)
                sys0, flt0 = _rusage()
                start = time.perf_counter()
                runners[c]()
                _sync(device)
                rec[c]["times_s"].append(time.perf_counter() - start)
                sys1, flt1 = _rusage()
                rec[c]["sys_s"].append(sys1 - sys0)
                rec[c]["minor_faults"].append(flt1 - flt0)
        summary: dict[str, Any] = {}
        for c, v in rec.items():
            med = statistics.median(v["times_s"])
            summary[c] = {
                **v,
                "median_s": med,
                "images_per_s": batch / med,
                "median_sys_s": statistics.median(v["sys_s"]),
                "median_minor_faults": statistics.median(v["minor_faults"]),
            }
        rate = {c: v["images_per_s"] for c, v in summary.items()}
        out[name] = {
            "input_size": size,
            "batch": batch,
            "configs": summary,
            "ratios": {
                "grad_cam_over_pgc_direct": rate["embedcam-grad-cam"] / rate["pgc-direct"],
                "grad_cam_over_pgc_direct_with": rate["embedcam-grad-cam"]
                / rate["pgc-direct-with"],
                "native_over_pgc_direct": rate["embedcam-native"] / rate["pgc-direct"],
            },
        }
        del runners, model
    return out


def print_overhead(result: dict[str, Any]) -> None:
    """Rich table of a ``--gradcam-overhead`` run."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m = result["machine"]
    console.print(
        f"[bold]machine[/]: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
        f"torch {m['torch']}, grad-cam {m.get('grad_cam', '?')}, device {m['device']}"
    )
    for name, rec in result["models"].items():
        table = Table(
            title=f"{name}: batch {rec['batch']} at {rec['input_size']}x{rec['input_size']}, "
            f"median of {result['settings']['repeats']} interleaved repeats"
        )
        for col in ("config", "images/s", "ms/batch", "sys s/call", "minor faults/call"):
            table.add_column(col, justify="left" if col == "config" else "right")
        for cfg, c in rec["configs"].items():
            table.add_row(
                cfg,
                f"{c['images_per_s']:.1f}",
                f"{c['median_s'] * 1000:.0f}",
                f"{c['median_sys_s']:.2f}",
                f"{c['median_minor_faults']:.0f}",
            )
        console.print(table)
        console.print("  ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in rec["ratios"].items()))


# --------------------------------------------------------------------------- report


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where it exists)."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return cpu


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, threads, versions and the accelerator, if any."""
    cpu = cpu_model()
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    return info


def _dist_version(dist: str) -> str | None:
    """Installed version of a distribution, or ``None``."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def ratios(rate: dict[str, float]) -> dict[str, float]:
    """Throughput ratios computed within the run (> 1 means the first is faster)."""
    return {
        "native_gradcam_over_forward": rate["native-gradcam"] / rate["forward"],
        "native_gradcampp_over_forward": rate["native-gradcam++"] / rate["forward"],
        "native_hirescam_over_forward": rate["native-hirescam"] / rate["forward"],
        "native_gradcam_over_pgc": rate["native-gradcam"] / rate["pgc-gradcam"],
        "native_gradcampp_over_pgc": rate["native-gradcam++"] / rate["pgc-gradcam++"],
        "native_gradcam_over_captum": rate["native-gradcam"] / rate["captum-gradcam"],
    }


def targets_met(model_rec: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's performance targets, evaluated on this run's numbers (reported, not asserted)."""
    r = model_rec["ratios"]
    mem = model_rec.get("memory_ratio_over_forward") or {}
    return {
        "gradcam_ge_0.9x_forward": r["native_gradcam_over_forward"] >= 0.9,
        "gradcampp_ge_0.9x_forward": r["native_gradcampp_over_forward"] >= 0.9,
        "ge_2x_pgc": r["native_gradcam_over_pgc"] >= 2.0,
        "not_slower_than_captum": r["native_gradcam_over_captum"] >= 1.0,
        "extra_memory_le_1.2x_inference": (
            mem["native-gradcam"] <= 1.2 if "native-gradcam" in mem else None
        ),
    }


def print_tables(result: dict[str, Any]) -> None:
    """Rich tables of the run."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m = result["machine"]
    console.print(
        f"[bold]machine[/]: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
        f"torch {m['torch']}, device {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}"
    )
    for name, rec in result["models"].items():
        table = Table(
            title=f"{name}: batch {rec['batch']} at {rec['input_size']}x{rec['input_size']}, "
            f"median of {result['settings']['repeats']} interleaved repeats"
        )
        for col in ("config", "images/s", "ms/batch", "x forward", "extra MB", "x inference MB"):
            table.add_column(col, justify="left" if col == "config" else "right")
        fwd = rec["configs"]["forward"]["images_per_s"]
        for cfg, c in rec["configs"].items():
            mem = rec.get("memory", {}).get(cfg)
            ratio = rec.get("memory_ratio_over_forward", {}).get(cfg)
            table.add_row(
                cfg,
                f"{c['images_per_s']:.1f}",
                f"{c['median_s'] * 1000:.0f}",
                f"{c['images_per_s'] / fwd:.2f}",
                f"{mem['extra_mb']:.0f}" if mem else "-",
                f"{ratio:.2f}" if ratio is not None else "-",
            )
        console.print(table)
        console.print("  ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in rec["ratios"].items()))
        console.print("  targets: " + ", ".join(f"{k}: {v}" for k, v in rec["targets_met"].items()))
    if "end_to_end" in result:
        e = result["end_to_end"]
        console.print(
            f"[bold]end to end[/] ({e['images']} synthetic shelf images, paper CNN, batch "
            f"{e['batch']}): {e['images_per_s']:.1f} images/s (centroids {e['centroids_s']:.1f} s, "
            f"CAMs {e['cam_s']:.1f} s, scores {e['scoring_s']:.1f} s, loop {e['loop_s']:.1f} s)"
        )
    if "scoring" in result:
        s = result["scoring"]
        console.print(
            f"[bold]scoring[/]: {s['maps']} maps 128x128, all scores but AUC: "
            f"{s['maps_per_s']:.0f} maps/s ({s['seconds']:.2f} s)"
        )


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` as JSON atomically (temp file + rename, normal file mode)."""
    atomic_write_text(path, json.dumps(obj, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Throughput and memory of embedding CAMs vs pytorch-grad-cam and Captum."
    )
    parser.add_argument("--quick", action="store_true", help="small batches, ~1 minute")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, help="timed repeats per config (default 7, quick 2)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "speed")
    parser.add_argument(
        "--gradcam-overhead",
        action="store_true",
        help="only time pytorch-grad-cam direct vs embedcam's grad-cam and native backends",
    )
    parser.add_argument(
        "--memory-child", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS
    )
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child, args.batch, args.device)))
        return 0

    device = torch.device(args.device)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 7)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.gradcam_overhead:
        import pytorch_grad_cam

        machine = machine_info(device)
        machine["grad_cam"] = getattr(pytorch_grad_cam, "__version__", None) or _dist_version(
            "grad-cam"
        )
        overhead = {
            "schema": OVERHEAD_SCHEMA,
            "machine": machine,
            "settings": {"quick": args.quick, "repeats": repeats, "device": str(device)},
            "models": gradcam_overhead(args.models, repeats, args.quick, device),
        }
        print_overhead(overhead)
        if args.json:
            write_json(args.json, overhead)
        return 0
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "machine": machine_info(device),
        "settings": {"quick": args.quick, "repeats": repeats, "device": str(device)},
        "models": {},
    }
    for name in args.models:
        size, full, quick = MODELS[name]
        batch = quick if args.quick else full
        model, layer = build_model(name)
        model.to(device)
        images = make_images(name, batch, device)
        runners = {c: build_runner(c, model, layer, images) for c in CONFIGS}
        times = time_configs(runners, repeats, device)
        configs = {}
        for c, ts in times.items():
            med = statistics.median(ts)
            configs[c] = {"times_s": ts, "median_s": med, "images_per_s": batch / med}
        rec: dict[str, Any] = {"input_size": size, "batch": batch, "configs": configs}
        rec["ratios"] = ratios({c: v["images_per_s"] for c, v in configs.items()})
        mem_configs = CONFIGS if not args.quick else ["forward", "native-gradcam", "pgc-gradcam"]
        if not args.no_memory and not (args.quick and name != "paper_cnn"):
            mem = measure_memory(name, mem_configs, batch, str(device))
            rec["memory"] = mem
            base = mem["forward"]["extra_mb"]
            rec["memory_ratio_over_forward"] = {
                c: (v["extra_mb"] / base if base > 0 else None) for c, v in mem.items()
            }
        rec["targets_met"] = targets_met(rec)
        result["models"][name] = rec
    result["end_to_end"] = end_to_end(100 if args.quick else 2000, 32, device, args.cache)
    result["scoring"] = scoring_throughput(500 if args.quick else 10000, 500, device)
    print_tables(result)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
