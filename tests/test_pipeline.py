"""explain_dataset: records equal the single-batch API, resume after a kill, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import embedcam as ec
from embedcam.errors import ConfigurationError, DataError, EmbedcamValueError

ROOT = Path(__file__).resolve().parents[1]


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 6),
    )


class BoxDataset(Dataset):
    """Deterministic images with one box each; dict items like ImageDataset's."""

    def __init__(self, n: int = 20, size: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, size, size, generator=g)
        self.labels = torch.arange(n) % 3
        x0 = torch.randint(0, size // 2, (n,), generator=g).float()
        self.boxes = [torch.tensor([[x, x / 2, x + size / 2, x / 2 + size / 2]]) for x in x0]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.images[i],
            "label": int(self.labels[i]),
            "boxes": self.boxes[i],
            "index": i,
        }


def collate(items: list[dict]) -> dict:
    return {
        "image": torch.stack([it["image"] for it in items]),
        "label": torch.tensor([it["label"] for it in items]),
        "boxes": [it["boxes"] for it in items],
        "index": torch.tensor([it["index"] for it in items]),
    }


RECIPES = [
    ec.Recipe(layer="3", target="centroid", method="gradcam"),
    ec.Recipe(layer="1", target="contrastive", method="gradcam++", signed=True),
]


@pytest.fixture()
def setup():
    net = small_net()
    ds = BoxDataset()
    loader = DataLoader(ds, batch_size=4, collate_fn=collate)
    cents = ec.ClassCentroids.fit(net, loader, progress=False)
    return net, ds, loader, cents


def test_records_equal_single_batch_api(setup, tmp_path):
    net, ds, loader, cents = setup
    recs = ec.explain_dataset(net, loader, cents, RECIPES, out=tmp_path / "r", progress=False)
    assert recs.images == 20 and recs.rows == 40
    df = recs.to_pandas()
    assert df["position"].tolist() == [p for p in range(20) for _ in range(2)]
    assert df["recipe"].tolist()[:2] == [RECIPES[0].name, RECIPES[1].name]
    regions = ec.boxes_to_masks(ds.boxes, size=(16, 16))
    for recipe in RECIPES:
        cam = ec.EmbeddingCAM(net, recipe.layer, method=recipe.method)
        target = recipe.make_target(cents.centroids, ds.labels)
        res = cam(ds.images, target)
        maps = res.signed_maps() if recipe.signed else res.maps
        sc = ec.scoring.score_maps(maps, regions, negatives=recipe.negatives, auc=False)
        verdict = ec.judge_features(maps, regions, negatives=recipe.negatives)
        torch.testing.assert_close(recs.column("score", recipe), res.scores, rtol=0, atol=1e-6)
        torch.testing.assert_close(
            recs.column("energy_in_box", recipe),
            sc.energy_in_box,
            rtol=0,
            atol=1e-5,
            equal_nan=True,
        )
        torch.testing.assert_close(
            recs.column("region_iou", recipe), sc.region_iou, rtol=0, atol=1e-6, equal_nan=True
        )
        assert torch.equal(recs.column("verdict", recipe), verdict)
        assert torch.equal(recs.column("empty", recipe), res.empty)
        assert torch.equal(recs.column("degenerate", recipe), res.degenerate)
        assert torch.isnan(recs.column("pixel_auc", recipe)).all()  # auc=False
    manifest = json.loads((tmp_path / "r" / "_manifest.json").read_text())
    assert manifest["complete"] and manifest["images"] == 20
    assert set(df["region"]) == {"box"}


def test_maps_stored_compactly(setup):
    net, ds, loader, cents = setup
    recipe = RECIPES[0]
    recs = ec.explain_dataset(net, loader, cents, recipe, maps="both", progress=False)
    res = ec.EmbeddingCAM(net, "3")(ds.images, ec.CentroidTarget(cents.centroids, ds.labels))
    stored = recs.maps(recipe)
    assert stored.shape == (20, 16, 16)
    assert float((stored - res.maps).abs().max()) <= 5e-4  # float16 of [0, 1] values
    raw = np.stack(recs.to_pandas()["raw"].to_numpy())
    np.testing.assert_array_equal(raw, res.raw.flatten(1).numpy())  # float32: exact


def test_plain_iterables_tuples_and_masks(setup):
    net, ds, _, cents = setup
    masks = ec.boxes_to_masks(ds.boxes, size=(16, 16))
    loader = [(ds.images[i : i + 5], ds.labels[i : i + 5], masks[i : i + 5]) for i in (0, 5)]
    recs = ec.explain_dataset(net, loader, cents, RECIPES[0], progress=False)
    df = recs.to_pandas()
    assert df["position"].tolist() == list(range(10))
    assert set(df["region"]) == {"mask"}
    no_regions = [(ds.images[:4], ds.labels[:4])]
    df2 = ec.explain_dataset(net, no_regions, cents, RECIPES[0], progress=False).to_pandas()
    assert df2["verdict"].isna().all() and df2["energy_in_box"].isna().all()
    assert df2["score"].notna().all()


def test_reference_recipe(setup):
    net, ds, _, _ = setup
    ref = torch.randn(6)
    recipe = ec.Recipe(layer="3", target="reference")
    recs = ec.explain_dataset(
        net, [(ds.images[:4], ds.labels[:4])], None, recipe, references=ref, progress=False
    )
    with torch.no_grad():
        expected = torch.nn.functional.cosine_similarity(net(ds.images[:4]), ref[None], dim=1)
    torch.testing.assert_close(recs.column("score", recipe), expected, rtol=0, atol=1e-6)
    with pytest.raises(EmbedcamValueError, match="reference"):
        ec.explain_dataset(net, [(ds.images[:4], ds.labels[:4])], None, recipe, progress=False)


def test_self_matches_are_degenerate_in_the_records(setup):
    net, ds, _, _ = setup
    recipe = ec.Recipe(layer="3", target="reference")
    images = ds.images[:4]
    with torch.no_grad():
        refs = net(images)
    refs[2:] = torch.randn(2, refs.shape[1])  # images 0, 1 against themselves; 2, 3 not
    recs = ec.explain_dataset(
        net,
        [{"image": images, "label": ds.labels[:4], "reference": refs}],
        None,
        recipe,
        progress=False,
    )
    assert recs.column("degenerate", recipe).tolist() == [True, True, False, False]
    assert recs.column("empty", recipe)[:2].all()


def test_refuses_records_of_an_older_schema(setup, tmp_path):
    net, _, loader, cents = setup
    out = tmp_path / "r"
    ec.explain_dataset(net, loader, cents, RECIPES[0], out=out, progress=False)
    manifest = json.loads((out / "_manifest.json").read_text())
    manifest["schema"] = "embedcam.records/1"
    (out / "_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigurationError, match="schema 'embedcam.records/1'.*overwrite=True"):
        ec.explain_dataset(net, loader, cents, RECIPES[0], out=out, progress=False)
    recs = ec.explain_dataset(
        net, loader, cents, RECIPES[0], out=out, overwrite=True, progress=False
    )
    assert "degenerate" in recs.to_pandas().columns
    assert json.loads((out / "_manifest.json").read_text())["schema"] == ec.pipeline.RECORDS_SCHEMA


def test_model_state_is_left_alone(setup):
    net, _, loader, cents = setup
    net.train()
    net[0].weight.requires_grad_(False)
    ec.explain_dataset(net, loader, cents, RECIPES, progress=False)
    assert net.training and not net[0].weight.requires_grad and net[2].weight.requires_grad
    assert all(p.grad is None for p in net.parameters())


def test_refuses_other_runs_records(setup, tmp_path):
    net, _, loader, cents = setup
    out = tmp_path / "r"
    ec.explain_dataset(net, loader, cents, RECIPES[0], out=out, progress=False)
    with pytest.raises(ConfigurationError, match="different run.*recipes"):
        ec.explain_dataset(net, loader, cents, RECIPES[1], out=out, progress=False)
    other = small_net(seed=1)
    with pytest.raises(ConfigurationError, match="model"):
        ec.explain_dataset(other, loader, cents, RECIPES[0], out=out, progress=False)
    recs = ec.explain_dataset(
        net, loader, cents, RECIPES[1], out=out, overwrite=True, progress=False
    )
    assert set(recs.to_pandas()["recipe"]) == {RECIPES[1].name}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"recipes": []}, ConfigurationError, "recipes is empty"),
        ({"recipes": [RECIPES[0], RECIPES[0]]}, ConfigurationError, "unique"),
        ({"maps": "all"}, ConfigurationError, "maps must be"),
        ({"part_size": 0}, ConfigurationError, "part_size"),
        ({"recipes": ec.Recipe(layer="3", method="nope")}, ConfigurationError, "unknown CAM"),
        ({"recipes": ec.Recipe(layer="9")}, ConfigurationError, "not in the model"),
    ],
)
def test_bad_arguments(setup, kwargs, error, match):
    net, _, loader, cents = setup
    args = {"recipes": RECIPES[0], "progress": False, **kwargs}
    recipes = args.pop("recipes")
    with pytest.raises(error, match=match):
        ec.explain_dataset(net, loader, cents, recipes, **args)


def test_bad_loaders(setup):
    net, ds, loader, cents = setup
    shuffled = DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate)
    with pytest.raises(ConfigurationError, match="shuffle=False"):
        ec.explain_dataset(net, shuffled, cents, RECIPES[0], progress=False)
    with pytest.raises(DataError, match="batch 0.*'image' and 'label'"):
        ec.explain_dataset(net, [{"img": ds.images}], cents, RECIPES[0], progress=False)
    with pytest.raises(DataError, match="batch 1"):
        bad = [(ds.images[:2], ds.labels[:2]), ds.images[2:4]]
        ec.explain_dataset(net, bad, cents, RECIPES[0], progress=False)
    with pytest.raises(ec.errors.ShapeError, match="2 images but 3 box"):
        bad3 = [(ds.images[:2], ds.labels[:2], ds.boxes[:3])]
        ec.explain_dataset(net, bad3, cents, RECIPES[0], progress=False)


def test_recipe_parse_and_errors():
    r = ec.Recipe.parse("target=contrastive, method=gradcam++, signed=yes", layer="layer3")
    assert (r.target, r.method, r.signed, r.layer) == ("contrastive", "gradcam++", True, "layer3")
    assert r.name == "contrastive/layer3/gradcam++/signed"
    assert ec.Recipe(layer="a", name="paper").name == "paper"
    assert {ec.Recipe(layer="a"): 1}[ec.Recipe(layer="a")] == 1  # hashable, equal by value
    with pytest.raises(ConfigurationError, match="key=value"):
        ec.Recipe.parse("contrastive", layer="x")
    with pytest.raises(ConfigurationError, match="target"):
        ec.Recipe.parse("target=centre", layer="x")
    with pytest.raises(ConfigurationError, match="signed must be"):
        ec.Recipe.parse("signed=maybe", layer="x")
    with pytest.raises(ConfigurationError, match="layer"):
        ec.Recipe.parse("method=gradcam")
    with pytest.raises(ec.errors.UnsupportedError, match="grad-cam"):
        ec.Recipe(layer="x", method="gradcam++", backend="captum").check()
    # Built directly, too: a typed error naming the field, never pydantic's raw one.
    with pytest.raises(ConfigurationError, match="layer must be the module's dotted name"):
        ec.Recipe(layer=nn.ReLU())
    with pytest.raises(ConfigurationError, match="bogus: Extra inputs are not permitted"):
        ec.Recipe(layer="x", bogus=1)
    with pytest.raises(ConfigurationError, match="target"):
        ec.Recipe(layer="x", target="centre")


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r})
    from test_pipeline import BoxDataset, collate, small_net, RECIPES
    from torch.utils.data import DataLoader
    import embedcam as ec
    import embedcam.pipeline as pl

    torch.set_num_threads(1)
    net, ds = small_net(), BoxDataset(n=40)
    loader = DataLoader(ds, batch_size=4, collate_fn=collate)
    cents = ec.ClassCentroids.fit(net, loader, progress=False)
    kill_after = int(sys.argv[2])
    flush = pl._Writer.flush
    def dying_flush(self, part):
        flush(self, part)
        if kill_after >= 0 and len(list(self.out.glob("part-*.parquet"))) >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    pl._Writer.flush = dying_flush
    ec.explain_dataset(net, loader, cents, RECIPES, out=sys.argv[1], part_size=8,
                       progress=False)
    """
)


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(tests=str(ROOT / "tests")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "a"), "2"], env=env, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL
    assert len(list((tmp_path / "a").glob("part-*.parquet"))) == 2
    assert not json.loads((tmp_path / "a" / "_manifest.json").read_text())["complete"]
    done_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").glob("part-*")}
    for out, kill in (("a", "-1"), ("b", "-1")):
        r = subprocess.run(
            [sys.executable, str(script), str(tmp_path / out), kill], env=env, capture_output=True
        )
        assert r.returncode == 0, r.stderr.decode()
    # finished parts were not rewritten, and the result equals an uninterrupted run's
    for name, mtime in done_before.items():
        assert (tmp_path / "a" / name).stat().st_mtime_ns == mtime
    a = sorted(p.name for p in (tmp_path / "a").glob("part-*"))
    assert a == sorted(p.name for p in (tmp_path / "b").glob("part-*")) and len(a) == 5
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(tmp_path / "a"), pq.read_table(tmp_path / "b")
    assert ta.equals(tb)


def test_to_pandas_without_pandas_says_how_to_install_it(setup, tmp_path, monkeypatch):
    net, _, loader, cents = setup
    recs = ec.explain_dataset(net, loader, cents, RECIPES[0], out=tmp_path / "r", progress=False)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ec.errors.ConfigurationError, match=r"pip install pandas.*\.table\(\)"):
        recs.to_pandas()
    assert recs.table().num_rows == 20  # pyarrow alone still reads them


def test_refuses_to_resume_over_data_changed_in_place(setup, tmp_path):
    # Same paths, same model, same recipes: only the data differs. Resuming used to reuse the
    # old records silently.
    net, ds, loader, cents = setup
    out = tmp_path / "r"
    ec.explain_dataset(net, loader, cents, RECIPES[0], out=out, progress=False)
    ec.explain_dataset(net, loader, cents, RECIPES[0], out=out, progress=False)  # same: resumes
    ds.images[0] += 0.25
    with pytest.raises(ConfigurationError, match=r"changed: \['data'\].*transform is random"):
        ec.explain_dataset(net, loader, cents, RECIPES[0], out=out, progress=False)


def _file_export_run(tmp_path):
    """A folder export explained into ``tmp_path / "r"``: (index, rerun) to try a resume."""
    from test_datasets import write_export

    from embedcam.datasets import ImageDataset, load_roboflow

    index = load_roboflow(write_export(tmp_path / "folder", "folder"))
    loader = DataLoader(ImageDataset(index, size=16), batch_size=2)
    net = small_net()
    cents = ec.ClassCentroids.fit(net, loader, progress=False)

    def rerun():
        ec.explain_dataset(net, loader, cents, RECIPES[0], out=tmp_path / "r", progress=False)

    rerun()
    return index, rerun


def test_image_files_rewritten_in_place_are_a_different_run(tmp_path):
    from PIL import Image

    index, rerun = _file_export_run(tmp_path)
    last = index.samples[-1].path  # not the first item: only the file's bytes can tell
    Image.new("RGB", (24, 20), (200, 10, 10)).save(last)
    with pytest.raises(
        ConfigurationError, match=r"changed: \['data'\].*changed files: '.*" + last.name
    ):
        rerun()


def test_a_same_size_edit_with_its_old_mtime_is_a_different_run(tmp_path):
    # cp -p, rsync -a and unzip restore modification times: a size/mtime check misses this.
    index, rerun = _file_export_run(tmp_path)
    path = index.samples[-1].path
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x55  # same size
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ConfigurationError, match="changed files: .*" + path.name):
        rerun()
