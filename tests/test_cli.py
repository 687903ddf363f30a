"""The ``embedcam`` command line: explain, audit, model loading and one-line errors."""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import embedcam as ec
from embedcam.audit import CollapseWarning
from embedcam.cli import build_parser, load_model, main, parse_size
from embedcam.datasets import ShelfConfig, generate_shelf

ROOT = Path(__file__).resolve().parents[1]

FACTORY = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, dim=8, width=6):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, dim)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


class DictNet(Net):
    def forward(self, x):
        emb = super().forward(x)
        return {"embedding": emb, "logits": emb[:, :2]}


class TupleNet(Net):
    def forward(self, x):
        emb = super().forward(x)
        return emb[:, :2], emb


def make(dim=8, width=6):
    torch.manual_seed(0)
    return Net(dim, width)


def make_dict():
    torch.manual_seed(0)
    return DictNet()


def make_tuple():
    torch.manual_seed(0)
    return TupleNet()


def not_a_model():
    return 42


def broken():
    raise RuntimeError("the factory is broken")
"""


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These models are tiny: one thread is faster, and it does not spin-wait on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    factory = root / "tiny_models.py"
    factory.write_text(FACTORY)
    spec = f"{factory}:make"
    model = load_model(spec)
    with torch.no_grad():  # "trained" weights: not what the factory builds
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    weights = root / "tiny.pt"
    torch.save(model.state_dict(), weights)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, root / "checkpoint.pt")
    torch.save({"conv.weight": torch.zeros(1)}, root / "wrong_keys.pt")
    torch.save(model, root / "whole_model.pt")

    rng = np.random.default_rng(0)
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    shapes = {"a.png": (24, 32), "b.jpg": (24, 32), "c.png": (20, 20), "sub/a.png": (16, 28)}
    for name, (h, w) in shapes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / name)
    (images / "notes.txt").write_text("not an image")

    # class centroids of two "classes" of random images, with this model
    x = torch.rand(6, 3, 24, 32, generator=torch.Generator().manual_seed(1))
    cents = ec.ClassCentroids.fit(model, [(x, torch.tensor([0, 1, 0, 1, 0, 1]))], progress=False)
    cents.save(root / "centroids.pt")
    ec.ClassCentroids(torch.rand(2, 5), torch.tensor([3, 3])).save(root / "centroids_5d.pt")

    # a folder-layout (classification) export and a COCO export with boxes
    folder = root / "folder_export"
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("cat", "dog"):
            (folder / split / cls).mkdir(parents=True)
            for j in range(n):
                arr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(arr).save(folder / split / cls / f"{cls}{j}.png")
    coco = root / "coco_export"
    generate_shelf(
        coco,
        ShelfConfig(
            image_size=32,
            families=2,
            siblings=1,
            images_per_class={"train": 6, "valid": 0, "test": 4},
        ),
    )
    return {
        "root": root,
        "factory": factory,
        "weights": weights,
        "images": images,
        "folder": folder,
        "coco": coco,
    }


def _model(work: dict[str, Path], factory: str = "make") -> list[str]:
    return ["--model", f"{work['factory']}:{factory}", "--weights", str(work["weights"])]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    return lines[0]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG" and img.mode == "RGB"
        return img.height, img.width


# -- help, usage, packaging -----------------------------------------------------------------------


def test_module_help_runs_in_a_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "embedcam", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: embedcam" in proc.stdout
    assert "explain" in proc.stdout and "audit" in proc.stdout
    assert "examples:" in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["explain", "audit"])
def test_subcommand_help_has_description_and_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"embedcam {command} --model" in out
    assert "--model MODULE:FACTORY" in out and "--layer NAME" in out
    # the examples in the epilog are commands the parser accepts
    examples = out.split("examples:", 1)[1].replace("\\\n", " ")
    commands = [
        shlex.split(ln) for ln in examples.splitlines() if ln.strip().startswith("embedcam")
    ]
    assert len(commands) == 2
    for words in commands:
        assert build_parser().parse_args(words[1:]).command == command


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: embedcam" in capsys.readouterr().err
    assert (
        main(["explain", "--model", "m:f", "--layer", "x", "img.png", "--out", "o", "--size", "0"])
        == 2
    )
    err = capsys.readouterr().err
    assert "--size" in err and "not an image size" in err and "Traceback" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"embedcam {ec.__version__}"


def test_explain_refuses_torchrun(
    work: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(_explain_args(work, "--reference", str(work["images"] / "a.png"))) == 2
    line = _error_line(capsys)
    assert "runs in one process" in line and line.endswith("(rank 1)")


def test_parse_size() -> None:
    assert parse_size("224") == (224, 224)
    assert parse_size("96x128") == (96, 128)


def test_pyproject_declares_the_console_script() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["embedcam"] == "embedcam.cli:main"


# -- model loading --------------------------------------------------------------------------------


def test_load_model_from_file_module_and_checkpoint(work: dict[str, Path]) -> None:
    saved = torch.load(work["weights"], weights_only=True)
    fresh = load_model(f"{work['factory']}:make")
    assert not torch.equal(fresh.head.weight, saved["head.weight"])
    for weights in (work["weights"], work["root"] / "checkpoint.pt"):
        model = load_model(f"{work['factory']}:make", weights=weights)
        assert not model.training
        assert all(torch.equal(t, saved[k]) for k, t in model.state_dict().items())
    wide = load_model(f"{work['factory']}:make", ["dim=4", "width=3"])
    assert wide.head.out_features == 4 and wide.head.in_features == 3
    # a dotted module name (here a torch module) works too
    assert isinstance(load_model("torch.nn:Identity"), torch.nn.Identity)


# -- explain --------------------------------------------------------------------------------------


def test_explain_reference_writes_maps_scores_and_table(
    work: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, out = work["images"], tmp_path / "out"
    ref = images / "a.png"
    code = main(
        ["explain", *_model(work), "--layer", "features.3", "--reference", str(ref)]
        + [str(images), "--out", str(out), "--batch-size", "2"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # the two a.png (top folder and sub/) get distinct names, the others their stem
    sizes = {"a": (24, 32), "b": (24, 32), "c": (20, 20), "sub__a": (16, 28)}
    for stem, hw in sizes.items():
        for kind in ("overlay", "darkened"):
            assert _png_size(out / f"{stem}_{kind}.png") == hw
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}_{k}.png" for s in sizes for k in ("overlay", "darkened")] + ["scores.csv"]
    )
    rows = _rows(out / "scores.csv")
    assert [Path(r["file"]).relative_to(images).as_posix() for r in rows] == [
        "a.png",
        "b.jpg",
        "c.png",
        "sub/a.png",
    ]
    assert {r["target"] for r in rows} == {"reference"} and {r["class"] for r in rows} == {""}
    assert abs(float(rows[0]["score"]) - 1.0) < 1e-5  # the reference against itself
    assert all(-1.0 <= float(r["score"]) <= 1.0 for r in rows)
    assert {r["empty"] for r in rows} <= {"True", "False"}
    # the reference image against itself is a degenerate explanation (saturated cosine): flagged,
    # empty, and said so in the table
    # (this tiny random model maps the random images within 1e-5 of each other: some others
    # are saturated cosines too; a score clearly below 1 never is)
    assert rows[0]["degenerate"] == "True" and rows[0]["empty"] == "True"
    assert all(r["empty"] == "True" for r in rows if r["degenerate"] == "True")
    assert all(r["degenerate"] == "False" for r in rows if float(r["score"]) < 0.99999)
    assert "degenerate" in captured.out
    assert "reference" in captured.out and "1.0000" in captured.out and "scores.csv" in captured.out

    # the darkened image keeps the image where the map is positive and darkens the rest
    orig = np.asarray(Image.open(ref).convert("RGB"), dtype=np.float32)
    dark = np.asarray(Image.open(out / "a_darkened.png"), dtype=np.float32)
    assert (dark <= orig + 1).all()


def test_explain_skips_its_own_outputs_inside_an_input_folder(
    work: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "c.png"):
        (photos / name).write_bytes((work["images"] / name).read_bytes())
    args = ["explain", *_model(work), "--layer", "features.3", "--reference", str(photos / "a.png")]
    args += [str(photos), "--out", str(photos / "maps")]
    for _ in range(2):
        assert main(args) == 0, capsys.readouterr().err
        rows = _rows(photos / "maps" / "scores.csv")
        assert [Path(r["file"]).name for r in rows] == ["a.png", "c.png"]


def test_explain_resizes_for_the_model_and_writes_at_image_size(
    work: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    img = work["images"] / "c.png"
    args = ["explain", *_model(work), "--layer", "features.1", "--reference", str(img)]
    args += [str(img), "--out", str(out), "--size", "12x16", "--mean", "0.5", "0.5", "0.5"]
    args += ["--std", "0.25", "0.25", "0.25", "--method", "gradcam++", "--signed"]
    assert main(args) == 0, capsys.readouterr().err
    assert _png_size(out / "c_overlay.png") == (20, 20)
    assert abs(float(_rows(out / "scores.csv")[0]["score"]) - 1.0) < 1e-5


def test_explain_centroids_with_label_and_nearest(
    work: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = work["images"]
    files = [images / "a.png", images / "b.jpg"]
    cents = ec.ClassCentroids.load(work["root"] / "centroids.pt")
    model = load_model(f"{work['factory']}:make", weights=work["weights"])
    with torch.no_grad():
        x = (
            torch.stack(
                [
                    torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
                    for f in files
                ]
            ).float()
            / 255
        )
        cos = torch.nn.functional.cosine_similarity(model(x)[:, None], cents.centroids[None], dim=2)
    base = ["explain", *_model(work), "--layer", "features.3", "--centroids"]
    base += [str(work["root"] / "centroids.pt"), *map(str, files)]

    assert main([*base, "--label", "1", "--out", str(tmp_path / "label")]) == 0
    rows = _rows(tmp_path / "label" / "scores.csv")
    assert [r["target"] for r in rows] == ["centroid"] * 2 and [r["class"] for r in rows] == [
        "1"
    ] * 2
    assert np.allclose([float(r["score"]) for r in rows], cos[:, 1].numpy(), atol=1e-5)

    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "nearest")]) == 0
    out = capsys.readouterr().out
    rows = _rows(tmp_path / "nearest" / "scores.csv")
    assert [r["target"] for r in rows] == ["nearest"] * 2
    assert [int(r["class"]) for r in rows] == cos.argmax(1).tolist()
    assert np.allclose([float(r["score"]) for r in rows], cos.max(1).values.numpy(), atol=1e-5)
    assert "(nearest)" in out


@pytest.mark.parametrize(("factory", "key"), [("make_dict", "embedding"), ("make_tuple", "1")])
def test_explain_embedding_key(
    work: dict[str, Path],
    tmp_path: Path,
    factory: str,
    key: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    img = work["images"] / "c.png"
    args = ["explain", "--model", f"{work['factory']}:{factory}", "--layer", "features.3"]
    args += ["--reference", str(img), str(img), "--out", str(tmp_path)]
    assert main(args) == 2
    assert "--embedding-key" in _error_line(capsys)
    assert main([*args, "--embedding-key", key]) == 0
    assert abs(float(_rows(tmp_path / "scores.csv")[0]["score"]) - 1.0) < 1e-5


# -- one-line errors ------------------------------------------------------------------------------


def _explain_args(
    work: dict[str, Path],
    *extra: str,
    model: list[str] | None = None,
    inputs: list[str] | None = None,
) -> list[str]:
    model = model if model is not None else _model(work)
    inputs = inputs if inputs is not None else [str(work["images"] / "a.png")]
    out = str(work["root"] / "o")
    return ["explain", *model, "--layer", "features.3", "--out", out, *extra, *inputs]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown module", "cannot import module 'no_such_module_for_embedcam'"),
        ("missing factory", "has no attribute 'mak'. Did you mean ['make'"),
        ("no colon", "must name a module and a factory function as MODULE:FACTORY"),
        ("factory fails", "calling broken() failed with RuntimeError: the factory is broken"),
        ("not a module", "returned an object of type int, not a torch.nn.Module"),
        ("bad model-arg", "--model-arg 'width' must look like key=value"),
        ("weights missing", "--weights: the file"),
        ("wrong keys", "6 missing (e.g. ['features.0.bias'"),
        ("whole model", "cannot be loaded with weights_only=True"),
        (
            "shape mismatch",
            "2 tensors differ in shape, e.g. head.weight is [8, 6] in the file but [9, 6] in the "
            "model",
        ),
        ("bad layer", "--layer: layer 'layer4' is not in the model"),
        ("neither target", "give exactly one target, got neither"),
        ("both targets", "give exactly one target, got both"),
        ("label alone", "--label needs --centroids FILE"),
        ("label range", "--label 5 is outside [0, 2)"),
        ("non-image input", "is not an image file (expected .jpg, .jpeg, .png, .bmp, .webp)"),
        ("missing input", "does not exist; pass image files or folders"),
        ("centroids missing", "--centroids: centroid file"),
        ("centroids of another model", "holds 5-dimensional centroids but the model's embeddings"),
        ("out is a file", "is a file; pass a folder for the outputs"),
        ("mean without std", "pass both --mean and --std"),
        ("bad method", "unknown CAM method 'gradcam+++'"),
        ("method not on backend", "backend 'captum' does not implement 'gradcam++'"),
    ],
)
def test_explain_errors_are_one_red_line(
    work: dict[str, Path], case: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    f, root, img = work["factory"], work["root"], work["images"] / "a.png"
    ref = ["--reference", str(img)]
    cents = ["--centroids", str(root / "centroids.pt")]
    args = {
        "unknown module": _explain_args(
            work, *ref, model=["--model", "no_such_module_for_embedcam:make"]
        ),
        "missing factory": _explain_args(work, *ref, model=["--model", f"{f}:mak"]),
        "no colon": _explain_args(work, *ref, model=["--model", str(f)]),
        "factory fails": _explain_args(work, *ref, model=["--model", f"{f}:broken"]),
        "not a module": _explain_args(work, *ref, model=["--model", f"{f}:not_a_model"]),
        "bad model-arg": _explain_args(work, *ref, "--model-arg", "width"),
        "weights missing": _explain_args(
            work, *ref, model=["--model", f"{f}:make", "--weights", str(root / "nope.pt")]
        ),
        "wrong keys": _explain_args(
            work, *ref, model=["--model", f"{f}:make", "--weights", str(root / "wrong_keys.pt")]
        ),
        "whole model": _explain_args(
            work, *ref, model=["--model", f"{f}:make", "--weights", str(root / "whole_model.pt")]
        ),
        "shape mismatch": _explain_args(work, *ref, "--model-arg", "dim=9"),
        "bad layer": [*_explain_args(work, *ref), "--layer", "layer4"],
        "neither target": _explain_args(work),
        "both targets": _explain_args(work, *ref, *cents),
        "label alone": _explain_args(work, *ref, "--label", "1"),
        "label range": _explain_args(work, *cents, "--label", "5"),
        "non-image input": _explain_args(work, *ref, inputs=[str(work["images"] / "notes.txt")]),
        "missing input": _explain_args(work, *ref, inputs=[str(root / "nowhere")]),
        "centroids missing": _explain_args(work, "--centroids", str(root / "nope.pt")),
        "centroids of another model": _explain_args(
            work, "--centroids", str(root / "centroids_5d.pt"), "--label", "0"
        ),
        "out is a file": [*_explain_args(work, *ref), "--out", str(work["factory"])],
        "mean without std": _explain_args(work, *ref, "--mean", "0.5", "0.5", "0.5"),
        "bad method": _explain_args(work, *ref, "--method", "gradcam+++"),
        "method not on backend": _explain_args(
            work, *ref, "--method", "gradcam++", "--backend", "captum"
        ),
    }[case]
    assert main(args) == 2
    line = _error_line(capsys)
    assert expected in line, line
    if case == "missing factory" or case == "weights missing":
        assert str(f if case == "missing factory" else root / "nope.pt") in line
    if case == "wrong keys":
        assert "1 unexpected (e.g. ['conv.weight'])" in line


# -- audit ----------------------------------------------------------------------------------------


def _audit_args(work: dict[str, Path], data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "audit",
        *_model(work),
        "--layer",
        "features.3",
        "--data",
        str(data),
        "--out",
        str(out),
        *extra,
    ]


def test_audit_coco_export_end_to_end(
    work: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit"
    recipes = [
        "--recipe",
        "target=centroid",
        "--recipe",
        "target=contrastive,method=gradcam++,signed=true",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(_audit_args(work, work["coco"], out, *recipes, "--k", "3", "--name", "tiny"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # a collapse is one red console line, never also a Python warning
    assert not [w for w in caught if issubclass(w.category, CollapseWarning)]
    collapsed = json.loads((out / "results.json").read_text())["health"]["collapsed"]
    assert captured.out.count("look collapsed") == int(collapsed)
    for name in ("results.json", "report.md", "report.html"):
        assert (out / name).is_file(), name
    assert (out / "records" / "_manifest.json").is_file()
    result = json.loads((out / "results.json").read_text())
    assert result["name"] == "tiny"
    assert [r["recipe"]["name"] for r in result["recipes"]] == [
        "centroid/features.3/gradcam",
        "contrastive/features.3/gradcam++/signed",
    ]
    assert result["classification"]["k"] == 3 and result["classification"]["images"] == 8
    assert "tiny: macro-F1" in captured.out and "contrastive/" in captured.out
    assert "wrote results.json" in captured.out and "Traceback" not in captured.err

    # other settings into the same folder: refused in CLI words, then replaced with --overwrite
    again = _audit_args(work, work["coco"], out, "--no-interventions")
    assert main(again) == 2
    assert "--overwrite" in _error_line(capsys)
    assert main([*again, "--overwrite", "--trust", "3"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert [r["recipe"]["name"] for r in result["recipes"]] == ["centroid/features.3/gradcam"]
    assert any(s["step"] == "interventions" for s in result["skipped"])
    # --trust N: the trust checks on the first N query images, in results.json and printed
    (checked,) = result["trust"]
    assert checked["recipe"] == "centroid/features.3/gradcam" and checked["images"] == 3
    assert 0 <= checked["specific"] <= 1 and 0 <= checked["unchanged"] <= 1
    assert "can the maps be trusted?" in capsys.readouterr().out
    for bad in ("-1", "x"):
        assert main([*again, "--trust", bad]) == 2
        assert f"--trust: '{bad}' is not an integer >= 0" in capsys.readouterr().err


def test_audit_classification_export_lists_skipped_steps(
    work: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit"
    code = main(_audit_args(work, work["folder"], out, "--classifier", "centroid"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (out / "results.json").is_file()
    assert "skipped" in captured.out and "box scores" in captured.out
    result = json.loads((out / "results.json").read_text())
    assert (
        result["classes"] == ["cat", "dog"] and result["classification"]["classifier"] == "centroid"
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not an export", "is not a readable Roboflow export: no split folders"),
        ("missing folder", "is not a readable Roboflow export: export root"),
        ("bad recipe", "recipe part 'gradcam' in 'gradcam' must look like key=value"),
        ("unknown recipe field", "invalid recipe"),
        ("missing split", "--query-split 'valid': the export"),
        ("same splits", "--gallery-split and --query-split are both 'train'"),
        ("extra labels missing", "--extra-labels"),
        ("recipe layer", "--recipe centroid/nope/gradcam: layer 'nope' is not in the model"),
    ],
)
def test_audit_errors_are_one_red_line(
    work: dict[str, Path],
    tmp_path: Path,
    case: str,
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    coco, out = work["coco"], tmp_path / "out"
    args = {
        "not an export": _audit_args(work, work["images"], out),
        "missing folder": _audit_args(work, tmp_path / "nowhere", out),
        "bad recipe": _audit_args(work, coco, out, "--recipe", "gradcam"),
        "unknown recipe field": _audit_args(work, coco, out, "--recipe", "colour=red"),
        "missing split": _audit_args(work, coco, out, "--query-split", "valid"),
        "same splits": _audit_args(work, coco, out, "--query-split", "train"),
        "extra labels missing": _audit_args(
            work, coco, out, "--extra-labels", str(tmp_path / "x.csv")
        ),
        "recipe layer": _audit_args(work, coco, out, "--recipe", "layer=nope"),
    }[case]
    assert main(args) == 2
    line = _error_line(capsys)
    assert expected in line, line
    assert not (out / "results.json").exists()


# -- the docs page --------------------------------------------------------------------------------


def _doc_blocks(lang: str) -> list[str]:
    text = (ROOT / "docs" / "cli.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_docs_commands_parse() -> None:
    parser = build_parser()
    commands = _doc_commands()
    assert len(commands) >= 8
    for words in commands:
        if words[:3] == ["python", "-m", "embedcam"]:
            words = words[3:]
        elif words[:2] == ["torchrun", "--nproc_per_node"] and words[3:5] == ["-m", "embedcam"]:
            assert words[5] == "audit", "only audit shards its work over processes"
            words = words[5:]
        elif words[0] == "embedcam":
            words = words[1:]
        else:
            raise AssertionError(f"docs/cli.md runs something unexpected: {words}")
        if "--help" in words or "-h" in words:
            continue
        parser.parse_args(words)


def _doc_commands(lang: str = "bash") -> list[list[str]]:
    commands = []
    for block in _doc_blocks(lang):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(shlex.split(line))
    return commands


def test_docs_examples_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The factory, the centroid snippet and the nearest-centroid command of docs/cli.md."""
    factory, centroids = _doc_blocks("python")[:2]
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    (tmp_path / "my_models.py").write_text(factory)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(factory, "docs/cli.md", "exec"), namespace)
    torch.save(namespace["resnet18_embedding"](dim=128).state_dict(), "model.pt")
    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    for name in ("photos/p1.png", "photos/p2.jpg"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(name)
    # the snippet as written, at 32 px instead of 224 to keep the test fast
    exec(compile(centroids.replace("224, 224", "32, 32"), "docs/cli.md", "exec"), {})
    assert ec.ClassCentroids.load("centroids.pt").num_classes == 4
    nearest = [
        c for c in _doc_commands() if c[:2] == ["embedcam", "explain"] and "--label" not in c
    ][-1]
    assert "--centroids" in nearest
    assert main([*nearest[1:], "--size", "32"]) == 0, capsys.readouterr().err
    rows = _rows(Path("maps/scores.csv"))
    assert [Path(r["file"]).name for r in rows] == ["p1.png", "p2.jpg"]
    assert {r["target"] for r in rows} == {"nearest"}
    for r in rows:
        assert _png_size(Path("maps") / f"{Path(r['file']).stem}_overlay.png") == (40, 48)
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
