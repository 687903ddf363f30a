"""The ``embedcam`` command line: explain images, or audit a model on a Roboflow export.

Two subcommands share the model options (``--model``, ``--weights``, ``--layer``, ...):

* ``embedcam explain``: Grad-CAM maps of single images or folders, explaining the cosine
  similarity to a reference image or to a class centroid; writes an overlay and the paper's
  darkened image per input, and ``scores.csv``.
* ``embedcam audit``: the whole audit of `embedcam.audit` on a Roboflow export
  (classification, explanations, judged features, interventions, report).

Every `EmbedcamError` (bad input) is printed as one red line
``error: <message>`` on stderr, with exit code 2, as argparse does for usage errors.

Examples:
    >>> from embedcam.cli import main
    >>> main(["--version"])
    embedcam ...
    0
"""

from __future__ import annotations

import argparse
import csv
import difflib
import hashlib
import importlib
import importlib.util
import io
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedcam.errors import ConfigurationError, DataError, EmbedcamError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from rich.console import Console
    from torch import nn

__all__ = ["main", "build_parser", "load_model", "parse_size", "IMAGE_SUFFIXES"]

#: Image files ``embedcam explain`` picks up in a folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

#: Holds True while this command owns the torch.distributed process group (under torchrun).
_STARTED: list[bool] = []

#: Keys of a checkpoint dict that may hold the state_dict.
_STATE_KEYS = ("state_dict", "model", "model_state")

_FACTORY_EXAMPLE = """\
A model factory is a function that returns the embedding model (an nn.Module whose forward
returns the (B, D) embedding), e.g. in my_models.py:

    import torchvision
    def resnet18_embedding(dim=128):
        return torchvision.models.resnet18(weights=None, num_classes=dim)
"""


# -- argument types -------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``--size``: ``"H"`` (square) or ``"HxW"``.

    Args:
        text: e.g. ``"224"`` or ``"96x128"``.

    Returns:
        ``(H, W)``.

    Raises:
        argparse.ArgumentTypeError: Not one or two positive integers.

    Examples:
        >>> parse_size("96x128"), parse_size("64")
        ((96, 128), (64, 64))
    """
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an image size; use H (square, e.g. 224) or HxW (e.g. 96x128)"
        )
    return (values[0], values[-1])


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 0")
    return value


# -- errors and output ----------------------------------------------------------------------------


def _one_line(message: str) -> str:
    if "Original Traceback" in message:  # re-raised from a DataLoader worker: keep the cause
        last = message.strip().splitlines()[-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(message.split())


def _print_error(console: Console, message: str) -> None:
    from rich.text import Text

    line = Text("error: ", style="bold red")
    line.append(_one_line(message), style="red")
    console.print(line, soft_wrap=True, highlight=False)


# -- model loading --------------------------------------------------------------------------------


def _parse_model_args(items: Sequence[str] | None) -> dict[str, Any]:
    import yaml

    kwargs: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigurationError(
                f"--model-arg {item!r} must look like key=value with a Python identifier as "
                "key, e.g. --model-arg dim=128 --model-arg pretrained=false"
            )
        try:
            kwargs[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigurationError(
                f"--model-arg {item!r}: the value is not a YAML scalar ({_one_line(str(err))}); "
                "quote strings that contain ':' or '#'"
            ) from err
    return kwargs


def _split_spec(spec: str) -> tuple[str, str]:
    module, sep, attr = spec.rpartition(":")
    if not sep or not module or not attr:
        raise ConfigurationError(
            f"--model {spec!r} must name a module and a factory function as MODULE:FACTORY, "
            "e.g. --model my_models:resnet18_embedding or --model path/to/my_models.py:make"
        )
    return module, attr


def _is_file_spec(module: str) -> bool:
    return module.endswith(".py") or os.sep in module or "/" in module


def _import_file(module: str) -> Any:
    path = Path(module).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"--model: the module file {str(path)!r} does not exist; pass an existing .py file "
            "as path/to/file.py:factory, or an importable module as package.module:factory"
        )
    digest = hashlib.blake2b(str(path.resolve()).encode(), digest_size=6).hexdigest()
    name = f"_embedcam_model_{digest}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"--model: {str(path)!r} cannot be imported as a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # as for a script: the file may import its neighbours
    try:
        spec.loader.exec_module(mod)
    except Exception as err:
        sys.modules.pop(name, None)
        raise ConfigurationError(
            f"--model: importing {str(path)!r} failed with {type(err).__name__}: {err}; fix the "
            "file, or check that its dependencies are installed"
        ) from err
    return mod


def _import_module(module: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as python -m does; the console script would not see it
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            raise ConfigurationError(
                f"--model: cannot import module {module!r} (no module named {missing!r}); check "
                "the spelling, run from the folder that holds it or install its package, or pass "
                "a file path as path/to/file.py:factory"
            ) from err
        raise ConfigurationError(
            f"--model: importing module {module!r} failed: it needs {missing!r}, which is not "
            "installed; install it (pip install ...) and try again"
        ) from err
    except Exception as err:
        raise ConfigurationError(
            f"--model: importing module {module!r} failed with {type(err).__name__}: {err}; fix "
            "the module"
        ) from err


def _factory(spec: str) -> tuple[Callable[..., Any], str]:
    module, attr = _split_spec(spec)
    mod = _import_file(module) if _is_file_spec(module) else _import_module(module)
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))]
            near = difflib.get_close_matches(attr, names, n=3, cutoff=0.5)
            hint = f" Did you mean {near}?" if near else (f" It has {names[:8]}." if names else "")
            raise ConfigurationError(
                f"--model {spec!r}: module {module!r} has no attribute {attr!r}.{hint} Name the "
                "function that builds the model after the colon"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigurationError(
            f"--model {spec!r}: {attr!r} is an object of type {type(obj).__name__}, not a "
            "callable; name a function (or class) that returns the model"
        )
    return obj, attr


# how the files torch.save writes begin: a zip archive, or the legacy pickle format
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


def _torch_file_problem(path: Path) -> str | None:
    """What makes ``path`` no torch file at all (empty, another format), or ``None``."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if not head:
        return "is empty (0 bytes): it was truncated, or its save was interrupted"
    if not head.startswith(_TORCH_MAGIC):
        return f"is not a file written by torch.save (it begins with {head[:8]!r})"
    return None


def _read_state_dict(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    if not path.is_file():
        raise DataError(
            f"--weights: the file {str(path)!r} does not exist; check the path, or leave out "
            "--weights to use the factory's own weights"
        )
    problem = _torch_file_problem(path)
    if problem is not None:
        raise DataError(
            f"--weights {str(path)!r} {problem}; pass a file written by "
            "torch.save(model.state_dict(), path)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise DataError(
            f"--weights {str(path)!r} cannot be loaded with weights_only=True: it holds pickled "
            "Python objects (e.g. a whole model saved with torch.save(model)). embedcam does not "
            "run code from weight files; re-save only the tensors with "
            "torch.save(model.state_dict(), path)"
        ) from err
    except Exception as err:  # torch raises many types for corrupt files
        detail = _one_line(str(err))[:200] or "no details"
        raise DataError(
            f"--weights {str(path)!r} is truncated or corrupt, not a readable torch file "
            f"({type(err).__name__}: {detail}); save it again with "
            "torch.save(model.state_dict(), path)"
        ) from err
    state = payload
    if isinstance(payload, Mapping):
        for key in _STATE_KEYS:
            if isinstance(payload.get(key), Mapping):
                state = payload[key]
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        what = (
            f"a dict with keys {sorted(map(str, payload))[:8]}"
            if isinstance(payload, Mapping)
            else f"a {type(payload).__name__}"
        )
        raise DataError(
            f"--weights {str(path)!r} holds {what}, not a state_dict; save one with "
            "torch.save(model.state_dict(), path), or a dict that holds it under one of the keys "
            f"{list(_STATE_KEYS)}"
        )
    return dict(state)


def _load_weights(model: nn.Module, path: Path) -> None:
    state = _read_state_dict(path)
    expected = set(model.state_dict())
    given = set(state)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        hint = (
            " The file's keys start with 'module.': it was saved from a DataParallel/DDP "
            "wrapper; save model.module.state_dict() instead."
            if unexpected and all(k.startswith("module.") for k in unexpected)
            else ""
        )
        raise DataError(
            f"--weights {str(path)!r} does not fit the model built by --model: "
            f"{' and '.join(parts)} keys.{hint} Check that --model and --model-arg build the "
            "architecture the weights were trained with"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        found = re.findall(
            r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[[^\]]*\])\) "
            r"from checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)",
            str(err),
        )
        detail = (
            f"{len(found)} tensors differ in shape, e.g. "
            + "; ".join(f"{k} is {a} in the file but {b} in the model" for k, a, b in found[:3])
            if found
            else _one_line(str(err))
        )
        raise DataError(
            f"--weights {str(path)!r} does not fit the model built by --model: {detail}. Check "
            "--model-arg (e.g. the embedding dimension)"
        ) from err


def load_model(
    spec: str,
    model_args: Sequence[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> nn.Module:
    """Build the model the way the command line does, in eval mode on ``device``.

    Args:
        spec: ``package.module:factory`` or ``path/to/file.py:factory``.
        model_args: ``key=value`` strings passed to the factory (values parsed as YAML scalars).
        weights: Optional state_dict file (``torch.load(..., weights_only=True)``): a plain
            state_dict, or a dict holding one under ``state_dict``, ``model`` or
            ``model_state``; loaded with ``strict=True``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        The model.

    Raises:
        ConfigurationError: Bad spec, import or factory failure, a factory that returns no
            ``nn.Module``, or an unavailable device.
        DataError: A missing, unreadable or mismatched weights file.
    """
    import torch
    from torch import nn

    kwargs = _parse_model_args(model_args)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigurationError(f"--device must be cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(
            "--device cuda: CUDA is not available on this machine (no GPU or a CPU-only torch); "
            "use --device cpu"
        )
    factory, attr = _factory(spec)
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    try:
        model = factory(**kwargs)
    except Exception as err:
        raise ConfigurationError(
            f"--model {spec!r}: calling {attr}({shown}) failed with {type(err).__name__}: {err}; "
            "check the --model-arg values against the factory's parameters"
        ) from err
    if not isinstance(model, nn.Module):
        raise ConfigurationError(
            f"--model {spec!r}: {attr}({shown}) returned an object of type "
            f"{type(model).__name__}, not a torch.nn.Module; the factory must return the "
            "embedding model"
        )
    if weights is not None:
        _load_weights(model, Path(weights))
    model.eval()
    return model.to(torch.device(device))


class PickEmbedding:
    """The ``--embedding-key`` picker: ``out[key]`` of a dict, ``out[int(key)]`` of a tuple.

    Args:
        key: The dict key or tuple index.
    """

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"PickEmbedding({self.key!r})"

    def __call__(self, out: Any) -> Any:
        """Pick the embedding from a model output."""
        if isinstance(out, Mapping):
            if self.key in out:
                return out[self.key]
            if self.key.lstrip("-").isdigit() and int(self.key) in out:
                return out[int(self.key)]
            raise ConfigurationError(
                f"--embedding-key {self.key!r}: the model returns a dict with keys "
                f"{sorted(map(str, out))}; pass one of them"
            )
        if isinstance(out, (tuple, list)):
            try:
                i = int(self.key)
            except ValueError:
                i = None
            if i is None or not -len(out) <= i < len(out):
                raise ConfigurationError(
                    f"--embedding-key {self.key!r}: the model returns a {type(out).__name__} of "
                    f"{len(out)} items; pass an index from 0 to {len(out) - 1}"
                )
            return out[i]
        raise ConfigurationError(
            f"--embedding-key {self.key!r}: the model returns a {type(out).__name__}, not a dict "
            "or tuple; leave out --embedding-key"
        )


def _embedding_fn(key: str | None) -> PickEmbedding | None:
    return PickEmbedding(key) if key is not None else None


def _embed(model: nn.Module, images: torch.Tensor, fn: PickEmbedding | None) -> torch.Tensor:
    """Embeddings under inference mode, with command-line worded errors."""
    import torch

    with torch.inference_mode():
        out = model(images)
        if fn is not None:
            out = fn(out)
    if isinstance(out, Mapping):
        raise ConfigurationError(
            f"the model returns a dict with keys {sorted(map(str, out))}, not the embedding "
            "tensor; pass --embedding-key KEY to pick it"
        )
    if isinstance(out, (tuple, list)):
        raise ConfigurationError(
            f"the model returns a {type(out).__name__} of {len(out)} items, not the embedding "
            "tensor; pass --embedding-key INDEX (e.g. --embedding-key 0) to pick it"
        )
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        what = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigurationError(
            f"the model's output must be a (B, D) embedding, got {what}; make the factory return "
            "a model that outputs the embedding, or pick it with --embedding-key"
        )
    return out.float().clone()  # a normal tensor: inference tensors cannot enter autograd


def _check_layer(model: nn.Module, layer: str, what: str = "--layer") -> None:
    from embedcam.cam._model import resolve_layer

    try:
        resolve_layer(model, layer)
    except Exception as err:
        message = str(err).replace("target_layer", "layer")
        top = [n for n, _ in model.named_children()]
        if top and "Near matches" not in message:
            more = ", ..." if len(top) > 15 else ""
            message += f"; its top-level modules are {', '.join(top[:15])}{more}"
        raise ConfigurationError(f"{what}: {message}") from err


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {str(out)!r} is a file; pass a folder for the outputs")


# -- explain --------------------------------------------------------------------------------------


def _collect_images(inputs: Sequence[str], out: Path) -> list[Path]:
    """The image files named by ``inputs``; folders are searched, skipping the output folder."""
    found: list[Path] = []
    seen: set[Path] = set()
    out = out.resolve()
    for item in inputs:
        p = Path(item)
        if p.is_dir() and (p.resolve() == out or p.resolve().is_relative_to(out)):
            raise ConfigurationError(
                f"--out {str(out)!r} is the input folder {item!r} or holds it, so the maps "
                "would be written among the images (and earlier outputs taken for inputs); pass "
                "an --out folder outside the inputs, e.g. a sibling folder"
            )
        if p.is_dir():
            broken = [
                f
                for f in p.rglob("*")
                if f.is_symlink() and not f.exists() and f.suffix.lower() in IMAGE_SUFFIXES
            ]
            if broken:
                raise DataError(
                    f"{str(broken[0])!r} in the input folder {item!r} is a broken symlink (its "
                    f"target is missing or a loop; {len(broken)} such file(s)); fix or remove it"
                )
            files = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES
                and not f.resolve().is_relative_to(out)  # earlier outputs are not inputs
            )
            if not files:
                raise DataError(
                    f"the folder {item!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}), "
                    "also in its sub-folders; pass a folder of images or image files"
                )
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(
                    f"input {item!r} is not an image file (expected {', '.join(IMAGE_SUFFIXES)}); "
                    "pass image files or folders of images"
                )
            files = [p]
        else:
            raise DataError(f"input {item!r} does not exist; pass image files or folders")
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.append(f)
    return found


def _output_stems(paths: Sequence[Path], inputs: Sequence[str]) -> list[str]:
    """One unique output name per image: the file stem, made unique with folders or a counter."""
    roots = [Path(i).resolve() for i in inputs if Path(i).is_dir()]

    def relative(p: Path) -> str:
        rp = p.resolve()
        for r in roots:
            if rp.is_relative_to(r):
                return "__".join(rp.relative_to(r).with_suffix("").parts)
        return p.stem

    stems = [p.stem for p in paths]
    counts = Counter(stems)
    names = [relative(p) if counts[s] > 1 else s for p, s in zip(paths, stems)]
    counts = Counter(names)
    names = [
        f"{n}_{p.suffix.lower().lstrip('.')}" if counts[n] > 1 else n for p, n in zip(paths, names)
    ]
    used: dict[str, int] = {}
    unique = []
    for n in names:
        k = used.get(n, 0)
        used[n] = k + 1
        unique.append(n if k == 0 else f"{n}-{k + 1}")
    return unique


def _image_size(path: Path) -> tuple[int, int]:
    """The displayed ``(H, W)`` of an input image, from its header (EXIF orientation applied).

    Raises:
        DataError: If the file is not an image or is over the pixel cap; the message names it.
    """
    from embedcam.datasets._io import image_size

    return image_size(path, verify=False, what="input image", hint="remove it from the inputs")


def _read_image(path: Path) -> torch.Tensor:
    """An input image as a ``(3, H, W)`` float tensor in ``[0, 1]``, decoded as displayed.

    16-bit files keep their precision (``v / 65535``); see `embedcam.datasets._io` for
    orientation, float images, alpha and the pixel cap.

    Raises:
        DataError: If the file cannot be decoded or is over the pixel cap; the message names it.
    """
    import torch

    from embedcam.datasets._io import read_rgb_float

    array = read_rgb_float(path, what="input image", hint="remove it from the inputs")
    return torch.from_numpy(array).permute(2, 0, 1)


@dataclass
class _Prep:
    """How an image becomes a model input: optional resize, optional normalisation."""

    size: tuple[int, int] | None
    mean: Sequence[float] | None
    std: Sequence[float] | None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        x = image
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(
                x[None], size=self.size, mode="bilinear", align_corners=False, antialias=True
            )[0].clamp(0.0, 1.0)
        if self.mean is not None and self.std is not None:
            m = torch.tensor(list(self.mean), dtype=x.dtype).view(3, 1, 1)
            s = torch.tensor(list(self.std), dtype=x.dtype).view(3, 1, 1)
            x = (x - m) / s
        return x.contiguous()


class _ImageFiles:
    """A map-style dataset of image files: the image in ``[0, 1]`` and the model input."""

    def __init__(self, paths: Sequence[Path], prep: _Prep) -> None:
        self.paths = list(paths)
        self.prep = prep

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        image = _read_image(self.paths[i])
        return i, image, self.prep(image)


def _collate(
    items: Sequence[tuple[int, torch.Tensor, torch.Tensor]],
) -> tuple[list[int], list[torch.Tensor], torch.Tensor]:
    import torch

    return [i for i, _, _ in items], [im for _, im, _ in items], torch.stack([x for *_, x in items])


def _check_norm(mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    if (mean is None) != (std is None):
        raise ConfigurationError("pass both --mean and --std for normalisation, or neither")
    if std is not None and any(s <= 0 for s in std):
        raise ConfigurationError(f"--std values must be > 0, got {list(std)}")


def _encode_png(image: torch.Tensor) -> bytes:
    """``(3, H, W)`` float image in ``[0, 1]`` -> PNG bytes."""
    from embedcam.datasets._io import encode_image

    array = (image.detach().float().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
    return encode_image(array.numpy(), "png")


def _class_names(centroids: Any) -> list[str] | None:
    meta = getattr(centroids, "metadata", {}) or {}
    for key in ("classes", "class_names"):
        names = meta.get(key)
        if isinstance(names, (list, tuple)) and len(names) == centroids.num_classes:
            return [str(n) for n in names]
    return None


def _note_no_weights(args: argparse.Namespace, console: Console) -> None:
    """Say so when no --weights file is given: the model is explained as its factory built it."""
    if args.weights is None:
        console.print(
            f"note: no --weights given: explaining {args.model} with the weights its factory "
            "sets (random unless it loads trained ones); pass --weights FILE for a trained model",
            style="yellow",
            highlight=False,
            soft_wrap=True,
        )


def _run_explain(args: argparse.Namespace, console: Console) -> int:
    import torch
    import torch.nn.functional as F
    from rich.table import Table
    from rich.text import Text
    from torch.utils.data import DataLoader

    from embedcam import masks
    from embedcam.atomic import atomic_outputs, atomic_write_bytes, atomic_write_text
    from embedcam.centroids import ClassCentroids
    from embedcam.recipe import Recipe

    if _world_size() > 1:
        raise ConfigurationError(
            "embedcam explain runs in one process; start it without torchrun (embedcam audit "
            "is the command that shards its work over processes)"
        )
    if (args.reference is None) == (args.centroids is None):
        got = "both" if args.reference is not None else "neither"
        raise ConfigurationError(
            f"give exactly one target, got {got}: --reference IMAGE (explain the cosine "
            "similarity to that image) or --centroids FILE (explain the similarity to a class "
            "centroid, with --label N or the nearest class)"
        )
    if args.label is not None and args.centroids is None:
        raise ConfigurationError(
            "--label needs --centroids FILE (the label picks one of its class centroids)"
        )
    _check_norm(args.mean, args.std)
    out = Path(args.out)
    _check_out(out)
    paths = _collect_images(args.inputs, out)
    ref_path = Path(args.reference) if args.reference is not None else None
    if ref_path is not None and not ref_path.is_file():
        raise DataError(f"--reference {args.reference!r} does not exist; pass an image file")
    sizes = [_image_size(p) for p in paths]  # fails early, naming a corrupt file
    recipe = Recipe.build(
        layer=args.layer,
        target="reference" if ref_path is not None else "centroid",
        method=args.method,
        backend=args.backend,
        signed=args.signed,
    )
    recipe.check()
    cents = None
    if args.centroids is not None:
        try:
            cents = ClassCentroids.load(args.centroids)
        except DataError as err:
            raise DataError(f"--centroids: {err}") from err
        if args.label is not None and not 0 <= args.label < cents.num_classes:
            raise ConfigurationError(
                f"--label {args.label} is outside [0, {cents.num_classes}): {args.centroids!r} "
                f"holds {cents.num_classes} class centroids"
            )
    model = load_model(args.model, args.model_arg, args.weights, args.device)
    _note_no_weights(args, console)
    _check_layer(model, args.layer)
    fn = _embedding_fn(args.embedding_key)
    device = torch.device(args.device)
    prep = _Prep(args.size, args.mean, args.std)
    # one image through the model first: clear errors about its output before the work starts
    probe = _embed(model, prep(_read_image(ref_path or paths[0]))[None].to(device), fn)
    reference = probe[0] if ref_path is not None else None
    if cents is not None and probe.shape[1] != cents.dim:
        raise ConfigurationError(
            f"--centroids {args.centroids!r} holds {cents.dim}-dimensional centroids but the "
            f"model's embeddings have {probe.shape[1]} dimensions; fit the centroids with this "
            "model (embedcam.ClassCentroids.fit)"
        )
    cent_matrix = cents.centroids.to(device) if cents is not None else None
    names = _class_names(cents) if cents is not None else None
    cam = recipe.cam(model, embedding_fn=fn)

    # batches of equal model-input size (every image has its own size without --size)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, hw in enumerate(sizes):
        groups.setdefault(args.size or hw, []).append(i)
    batches = [
        idx[j : j + args.batch_size]
        for idx in groups.values()
        for j in range(0, len(idx), args.batch_size)
    ]
    loader: DataLoader[Any] = DataLoader(
        _ImageFiles(paths, prep),  # type: ignore[arg-type]
        batch_sampler=batches,
        num_workers=args.workers,
        collate_fn=_collate,
    )
    stems = _output_stems(paths, args.inputs)
    rows: dict[int, dict[str, Any]] = {}
    target_name = (
        "reference" if ref_path is not None else "centroid" if args.label is not None else "nearest"
    )
    # every PNG and scores.csv: all or nothing (a full disk or Ctrl-C keeps the old outputs)
    with atomic_outputs(out, last=("scores.csv",)):
        for index, images, inputs in loader:
            inputs = inputs.to(device)
            labels = None
            if cent_matrix is not None:
                if args.label is not None:
                    labels = torch.full((len(index),), args.label, dtype=torch.long, device=device)
                else:
                    emb = _embed(model, inputs, fn)
                    cos = F.normalize(emb, dim=1) @ F.normalize(cent_matrix.float(), dim=1).T
                    labels = cos.argmax(dim=1)
            target = recipe.make_target(cent_matrix, labels, reference)
            res = cam(inputs, target)
            shown = res.signed_maps() if recipe.signed else res.maps
            for b, i in enumerate(index):
                image = images[b]
                hw = (int(image.shape[-2]), int(image.shape[-1]))
                m = shown[b : b + 1].detach().float().cpu()
                if tuple(m.shape[-2:]) != hw:
                    m = m[:, None]
                    m = F.interpolate(m, size=hw, mode="bilinear", align_corners=False)[:, 0]
                heat = m.abs() if recipe.signed else m
                over = masks.overlay(image[None], heat)[0]
                dark = masks.darken(image[None], m)[0]
                atomic_write_bytes(out / f"{stems[i]}_overlay.png", _encode_png(over))
                atomic_write_bytes(out / f"{stems[i]}_darkened.png", _encode_png(dark))
                label = int(labels[b]) if labels is not None else None
                rows[i] = {
                    "file": str(paths[i]),
                    "target": target_name,
                    "class": "" if label is None else label,
                    "score": float(res.scores[b]),
                    "empty": bool(res.empty[b]),
                    "degenerate": bool(res.degenerate[b]),
                    "_name": names[label] if names is not None and label is not None else None,
                }
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["file", "target", "class", "score", "empty", "degenerate"])
        for i in sorted(rows):
            r = rows[i]
            writer.writerow(
                [
                    r["file"],
                    r["target"],
                    r["class"],
                    f"{r['score']:.6f}",
                    r["empty"],
                    r["degenerate"],
                ]
            )
        atomic_write_text(out / "scores.csv", buf.getvalue())

    target_text = {
        "reference": f"cosine to the reference image {str(ref_path)!r}",
        "centroid": f"cosine to the centroid of class {args.label}",
        "nearest": "cosine to the nearest class centroid",
    }[target_name]
    table = Table(
        title=Text(f"{recipe.method} on {recipe.layer!r}: {target_text}"),
        title_justify="left",
    )
    table.add_column("image", overflow="fold")
    table.add_column("target")
    table.add_column("class", justify="right")
    table.add_column("score", justify="right")
    table.add_column("empty map")
    for i in sorted(rows):
        r = rows[i]
        cls = "" if r["class"] == "" else str(r["class"])
        if r["_name"] is not None:
            cls += f" {r['_name']}"
        if target_name == "nearest":
            cls += " (nearest)"
        table.add_row(
            Text(r["file"]),
            r["target"],
            Text(cls),
            f"{r['score']:.4f}",
            "[yellow]yes: degenerate (self-match?)[/]"
            if r["degenerate"]
            else ("[yellow]yes[/]" if r["empty"] else "no"),
        )
    console.print(table)
    console.print(
        f"wrote {2 * len(rows)} images (<name>_overlay.png, <name>_darkened.png) and scores.csv "
        f"to {out}",
        highlight=False,
        soft_wrap=True,
    )
    return 0


# -- audit ----------------------------------------------------------------------------------------


def _recipes(specs: Sequence[str] | None, layer: str) -> list[Any]:
    from embedcam.recipe import Recipe

    for s in specs or []:
        if not s.strip(" ,"):
            raise ConfigurationError(
                f"--recipe {s!r} is empty; give a recipe such as target=centroid,method=gradcam, "
                "or leave --recipe out for the default one"
            )
    recipes = [Recipe.parse(s, layer=layer) for s in specs] if specs else [Recipe(layer=layer)]
    names = [r.name for r in recipes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigurationError(
            f"--recipe: the recipes {dup} are given twice; give each recipe once (or a distinct "
            "name=...)"
        )
    for r in recipes:
        r.check()
    return recipes


def _run_audit(args: argparse.Namespace, console: Console) -> int:
    import torch
    from rich.text import Text
    from torch.utils.data import DataLoader

    from embedcam.atomic import atomic_outputs
    from embedcam.datasets import ImageDataset, collate_boxes, load_roboflow

    _check_norm(args.mean, args.std)
    out = Path(args.out)
    _check_out(out)
    if args.k < 1:
        raise ConfigurationError(f"--k must be >= 1, got {args.k}")
    recipes = _recipes(args.recipe, args.layer)
    try:
        from embedcam.audit import CollapseWarning, audit
    except ImportError as err:
        raise ConfigurationError(
            f"this embedcam has no audit function ({err}); update embedcam"
        ) from err
    data = Path(args.data)
    if data.is_dir() and out.resolve().is_relative_to(data.resolve()):
        raise ConfigurationError(
            f"--out {args.out!r} is inside the export --data {args.data!r}; the outputs would be "
            "mixed with the data (and read as data by the next run): pass a folder outside it"
        )
    if args.extra_labels is not None and not Path(args.extra_labels).is_file():
        raise DataError(
            f"--extra-labels {args.extra_labels!r} does not exist; pass the additional-labels "
            "file (.csv or .json, keyed by class name), or leave the option out"
        )
    try:
        index = load_roboflow(data, extra_labels=args.extra_labels)
    except DataError as err:
        raise DataError(f"--data {args.data!r} is not a readable Roboflow export: {err}") from err
    splits = index.splits
    for option, split in (
        ("--gallery-split", args.gallery_split),
        ("--query-split", args.query_split),
    ):
        if split not in splits:
            raise ConfigurationError(
                f"{option} {split!r}: the export at {args.data!r} has no such split (it has "
                f"{splits}); pass one of them"
            )
    if args.gallery_split == args.query_split:
        raise ConfigurationError(
            f"--gallery-split and --query-split are both {args.gallery_split!r}; the queries must "
            "be other images than the gallery"
        )
    if args.size is None:
        sizes = sorted({s.size for s in index.samples if s.size is not None})
        if len(sizes) > 1:
            raise ConfigurationError(
                f"the images of {args.data!r} have {len(sizes)} different sizes (e.g. "
                f"{sizes[:3]} as (H, W)); pass --size H or HxW so that they can be batched"
            )
    rank, device = _start_distributed(args.device)
    if rank > 0:
        console.quiet = True  # rank 0 prints; every rank still reports its own errors
    model = load_model(args.model, args.model_arg, args.weights, device)
    _note_no_weights(args, console)
    for r in recipes:
        _check_layer(model, r.layer, "--layer" if r.layer == args.layer else f"--recipe {r.name}")
    fn = _embedding_fn(args.embedding_key)

    def loader(split: str) -> DataLoader:
        ds = ImageDataset(index, size=args.size, split=split, mean=args.mean, std=args.std)
        return DataLoader(
            ds,
            batch_size=args.batch_size,
            shuffle=False,
            num_workers=args.workers,
            collate_fn=collate_boxes,
        )

    gallery, queries = loader(args.gallery_split), loader(args.query_split)
    first = gallery.dataset[0]["image"][None]
    _embed(model, first.to(torch.device(device)), fn)  # clear errors before the long run
    valid = (
        loader("valid")
        if "valid" in splits and "valid" not in (args.gallery_split, args.query_split)
        else None
    )
    name = args.name or args.model.rpartition(":")[2]
    if args.overwrite and rank == 0:
        _remove_records(out / "records")
    _barrier()
    say = console.is_terminal  # audit() then shows progress bars and prints the summary itself
    try:
        # A collapse is printed once, in red, on the console (not also as a Python warning).
        # results.json, the reports and examples.png: all or nothing (the records resume).
        with warnings.catch_warnings(), atomic_outputs(out, exclude=("records",)):
            warnings.simplefilter("ignore", CollapseWarning)
            result = audit(
                model,
                gallery,
                queries,
                recipes,
                valid=valid,
                name=name,
                class_names=list(index.classes),
                classifier=args.classifier,
                k=args.k,
                interventions=not args.no_interventions,
                trust_images=args.trust,
                out=out,
                seed=args.seed,
                embedding_fn=fn,
                progress=say,
                console=console,
            )
    except ConfigurationError as err:
        if "overwrite=True" not in str(err):
            raise
        raise ConfigurationError(str(err).replace("overwrite=True", "--overwrite")) from err
    if not say:
        console.print(result.summary_table())
        if result.trust:
            console.print(result.trust_table())
        h = result.health
        if h is not None and h.collapsed:
            console.print(
                Text(
                    f"{name}: the embeddings look collapsed (effective rank "
                    f"{h.effective_rank:.1f} of {h.dim}, mean pairwise cosine "
                    f"{h.mean_pairwise_cosine:.2f}); maps and scores of this model are not "
                    "comparable with a healthy model's",
                    style="bold red",
                )
            )
        for s in result.skipped:
            line = Text("skipped ", style="yellow")
            line.append(f"{s.step}: {s.reason}")
            console.print(line, highlight=False)
    written = [
        n
        for n in ("results.json", "report.md", "report.html", "examples.png", "records/")
        if (out / n).exists()
    ]
    console.print(f"wrote {', '.join(written)} to {out}", highlight=False, soft_wrap=True)
    return 0


def _world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _start_distributed(device: str) -> tuple[int, str]:
    """Join the process group under ``torchrun``; return ``(rank, this rank's device)``."""
    import torch
    import torch.distributed as dist

    if _world_size() <= 1:
        return 0, device
    if not dist.is_initialized():
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigurationError(
                "--device cuda: CUDA is not available on this machine; use --device cpu"
            )
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        _STARTED.append(True)
    if device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return int(dist.get_rank()), device


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _stop_distributed() -> None:
    """Leave the process group, if this command started it."""
    import torch.distributed as dist

    if _STARTED and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _STARTED.clear()


def _remove_records(folder: Path) -> None:
    """Delete an earlier run's records folder, but only one that explain_dataset wrote."""
    import json
    import shutil

    if not folder.exists():
        return
    manifest = folder / "_manifest.json"
    try:
        schema = json.loads(manifest.read_text()).get("schema", "")
    except (OSError, ValueError, AttributeError):
        schema = ""
    if not str(schema).startswith("embedcam.records/"):
        raise ConfigurationError(
            f"--overwrite: {str(folder)!r} is not an embedcam records folder (no valid "
            "_manifest.json); it was left alone - move it away or use another --out"
        )
    shutil.rmtree(folder)


# -- parser ---------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=100)


def _model_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group(
        "model",
        "How to build the model: a factory function that returns it, optional weights, and\n"
        "the layer to explain.",
    )
    g.add_argument(
        "--model",
        required=True,
        metavar="MODULE:FACTORY",
        help="function that builds the embedding model, as package.module:function or "
        "path/to/file.py:function; it is called with the --model-arg values (if any)",
    )
    g.add_argument(
        "--model-arg",
        action="append",
        metavar="KEY=VALUE",
        help="keyword argument for the factory (repeatable); the value is read as YAML: "
        "dim=128, pretrained=false, name=resnet",
    )
    g.add_argument(
        "--weights",
        metavar="FILE",
        help="state_dict file (torch.save(model.state_dict(), FILE), or a checkpoint dict with "
        "a 'state_dict', 'model' or 'model_state' key); loaded with weights_only=True, strict. "
        "Without it the model keeps the weights its factory sets (random unless it loads them)",
    )
    g.add_argument(
        "--layer",
        required=True,
        metavar="NAME",
        help="dotted name of the module to explain, usually the last convolutional block "
        "(layer4, features.7); list them with [n for n, _ in model.named_modules()]",
    )
    g.add_argument(
        "--embedding-key",
        metavar="KEY",
        help="when the model returns a dict or tuple: the key (or index) of the embedding",
    )
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    d = parent.add_argument_group("input images")
    d.add_argument(
        "--size",
        type=parse_size,
        metavar="H|HxW",
        help="resize images to the model's input size (default: keep each image's size)",
    )
    d.add_argument(
        "--mean",
        type=float,
        nargs=3,
        metavar=("R", "G", "B"),
        help="normalise inputs: (x - mean) / std on [0, 1] pixels, e.g. --mean 0.485 0.456 "
        "0.406 --std 0.229 0.224 0.225 (default: no normalisation)",
    )
    d.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"), help="see --mean")
    d.add_argument("--batch-size", type=_positive_int, default=32, metavar="N", help="default: 32")
    d.add_argument(
        "--workers",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="image-loading worker processes (DataLoader num_workers; default: 0)",
    )
    return parent


_MAIN_DESCRIPTION = """\
embedcam explains metric-learning (embedding) models with Grad-CAM: triplet-loss, retrieval,
re-identification and product-recognition models that output embeddings rather than class
scores. It explains the cosine similarity between an image's embedding and a reference (another
image or a class centroid), and can audit a model on a Roboflow export: is the evidence on the
object or on the background?
"""

_MAIN_EPILOG = (
    """\
examples:
  embedcam explain --model my_models.py:resnet18_embedding --weights model.pt --layer layer4 \\
      --size 224 --reference query.jpg photos/ --out maps/
  embedcam audit --model my_models.py:resnet18_embedding --weights model.pt --layer layer4 \\
      --size 224 --data my-export/ --out audit/

Run "embedcam explain --help" or "embedcam audit --help" for the options.

"""
    + _FACTORY_EXAMPLE
)

_EXPLAIN_DESCRIPTION = """\
Explain single images, or every image in folders (recursively: .jpg, .jpeg, .png, .bmp, .webp),
with a Grad-CAM family method. The explained score is the cosine similarity between an image's
embedding and a target: the embedding of one --reference image, or a class centroid from
--centroids (a file written by embedcam.ClassCentroids.save) - the class given by --label, or
else the nearest centroid's class. Give exactly one of --reference and --centroids. For each
image it writes <name>_overlay.png (the map over the image) and <name>_darkened.png (the image
darkened where the map shows no positive evidence: what stays visible is what the model used),
both at the image's own size, plus scores.csv (file, target, class, score, empty) and prints the
same table. <name> is the file's stem (made unique with its sub-folder when two inputs share it).
"""

_EXPLAIN_EPILOG = """\
examples:
  # similarity of every photo to one query image
  embedcam explain --model my_models.py:resnet18_embedding --weights model.pt --layer layer4 \\
      --size 224 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 \\
      --reference query.jpg photos/ --out maps/

  # similarity to the centroid of class 3, signed Grad-CAM++ maps
  embedcam explain --model my_models.py:resnet18_embedding --weights model.pt --layer layer4 \\
      --centroids centroids.pt --label 3 --method gradcam++ --signed shelf.jpg --out maps/
"""

_AUDIT_DESCRIPTION = """\
Audit an embedding model on a Roboflow export (any layout: folder, CSV, COCO, YOLO, VOC; unzip it
first). The gallery split (default train) gives the class centroids and the kNN gallery; every
image of the query split (default test) is classified (kNN or nearest centroid), explained with
each --recipe, and, where the export has boxes, judged: is the evidence on the object? With boxes,
background interventions (BG-gap) run on the query and valid splits. The valid split, when the
export has one, is classified too. The audit writes records/ (one Parquet row per image and
recipe), results.json, report.md, a self-contained report.html and examples.png to --out, and
prints a summary table (macro F1, accuracy, errors, features correct).
"""

_AUDIT_EPILOG = """\
examples:
  embedcam audit --model my_models.py:resnet18_embedding --weights model.pt --layer layer4 \\
      --size 224 --data my-export/ --out audit/

  # compare two recipes, classify by nearest centroid
  embedcam audit --model my_models.py:resnet18_embedding --weights model.pt --layer layer4 \\
      --size 224 --data my-export/ --out audit/ --classifier centroid \\
      --recipe target=centroid --recipe target=contrastive,method=gradcam++,signed=true

A recipe is key=value pairs: target=centroid|contrastive|reference, method=gradcam|gradcam++|
hirescam|..., backend=native|grad-cam|captum, signed=true|false, layer=NAME (default: --layer).
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``embedcam`` command.

    Returns:
        The parser, with the ``explain`` and ``audit`` subcommands.
    """
    from embedcam import __version__

    parser = argparse.ArgumentParser(
        prog="embedcam",
        description=_MAIN_DESCRIPTION,
        epilog=_MAIN_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"embedcam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    model = _model_options()

    ex = sub.add_parser(
        "explain",
        parents=[model],
        help="maps for single images or folders (an overlay and a darkened image each)",
        description=_EXPLAIN_DESCRIPTION,
        epilog=_EXPLAIN_EPILOG,
        formatter_class=_Formatter,
    )
    ex.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    ex.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    t = ex.add_argument_group("target (exactly one of --reference and --centroids)")
    t.add_argument("--reference", metavar="IMAGE", help="explain the similarity to this image")
    t.add_argument(
        "--centroids",
        metavar="FILE",
        help="class centroids (embedcam.ClassCentroids.save); explain the similarity to one",
    )
    t.add_argument(
        "--label",
        type=int,
        metavar="N",
        help="with --centroids: the class index to explain (default: each image's nearest)",
    )
    c = ex.add_argument_group("explanation")
    c.add_argument(
        "--method",
        default="gradcam",
        help="gradcam (default), gradcam++, hirescam, xgradcam, layercam; more with "
        "--backend grad-cam",
    )
    c.add_argument(
        "--backend",
        default="native",
        choices=("native", "grad-cam", "captum"),
        help="native (default, fastest), grad-cam (pytorch-grad-cam) or captum",
    )
    c.add_argument(
        "--signed",
        action="store_true",
        help="overlay |signed map|: evidence for and against the target (default: the ReLU'd "
        "map); the darkened image always keeps the positive evidence",
    )
    ex.set_defaults(run=_run_explain)

    au = sub.add_parser(
        "audit",
        parents=[model],
        help="classify, explain, judge and report on a whole Roboflow export",
        description=_AUDIT_DESCRIPTION,
        epilog=_AUDIT_EPILOG,
        formatter_class=_Formatter,
    )
    au.add_argument(
        "--data", required=True, metavar="EXPORT", help="the unzipped Roboflow export folder"
    )
    au.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    au.add_argument(
        "--extra-labels",
        metavar="FILE",
        help="additional labels per class name (.csv or .json), e.g. category and group",
    )
    au.add_argument("--gallery-split", default="train", metavar="SPLIT", help="default: train")
    au.add_argument("--query-split", default="test", metavar="SPLIT", help="default: test")
    au.add_argument(
        "--recipe",
        action="append",
        metavar="SPEC",
        help="an explanation recipe (repeatable), e.g. target=contrastive,method=gradcam++,"
        "signed=true; default: one recipe, target=centroid,method=gradcam",
    )
    au.add_argument(
        "--classifier",
        choices=("knn", "centroid"),
        default="knn",
        help="knn (default) or nearest centroid",
    )
    au.add_argument("--k", type=_positive_int, default=5, metavar="K", help="kNN k (default: 5)")
    au.add_argument("--name", help="model name in the report (default: the factory's name)")
    au.add_argument("--seed", type=int, default=0, help="seed of the interventions (default: 0)")
    au.add_argument(
        "--no-interventions",
        action="store_true",
        help="skip the background-intervention tests (faster)",
    )
    au.add_argument(
        "--trust",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="run the trust checks (class specificity, weight randomisation, deletion/"
        "insertion) of every recipe on the first N query images (default: 0, off; a few dozen "
        "are enough)",
    )
    au.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the records of an earlier run in DIR/records (by default a run with the "
        "same settings resumes there, and one with other settings is refused)",
    )
    au.set_defaults(run=_run_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``embedcam`` command.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 on bad input (an ``error: ...`` line on stderr) or a
        usage error, 130 when interrupted.
    """
    from rich.console import Console

    err_console = Console(stderr=True)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, usage errors
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120  # tables in logs and pipes: wider than rich's default 80
    try:
        return int(args.run(args, console))
    except EmbedcamError as err:
        rank = os.environ.get("RANK") if _world_size() > 1 else None
        _print_error(err_console, str(err) + (f" (rank {rank})" if rank not in (None, "0") else ""))
        return 2
    except OSError as err:  # the file system failed outside embedcam's own writers
        where = f" ({err.filename})" if err.filename else ""
        _print_error(err_console, f"{err.strerror or err}{where}")
        return 2
    except KeyboardInterrupt:
        _print_error(err_console, "interrupted; the outputs of earlier runs were kept")
        return 130
    finally:
        _stop_distributed()
