"""audit and compare: numbers agree with independent computations; skipped steps are stated."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import embedcam as ec
from embedcam.audit import AuditResult, Classification, CollapseWarning, PerImage, RecipeSummary
from embedcam.classify import evaluate, knn_predict
from embedcam.datasets import ImageDataset, ShelfConfig, collate_boxes
from embedcam.embedding import EmbeddingHealth
from embedcam.errors import ConfigurationError, DataError


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 8),
    )


@pytest.fixture(scope="module")
def shelf(tmp_path_factory):
    root = tmp_path_factory.mktemp("shelf")
    cfg = ShelfConfig(
        image_size=32,
        families=2,
        siblings=2,
        images_per_class={"train": 6, "valid": 3, "test": 4},
    )
    return ec.datasets.generate_shelf(root / "export", cfg)


def loader(index, split, masks=False):
    ds = ImageDataset(index, size=32, split=split, with_masks=masks)
    return DataLoader(ds, batch_size=8, collate_fn=collate_boxes)


RECIPES = [
    ec.Recipe(layer="3", name="last"),
    ec.Recipe(layer="1", target="contrastive", signed=True, name="early"),
]


def test_audit_numbers_agree_with_independent_computation(shelf, tmp_path):
    net = tiny_net()
    gal, qry = loader(shelf, "train"), loader(shelf, "test", masks=True)
    res = ec.audit(
        net,
        gal,
        qry,
        RECIPES,
        valid=loader(shelf, "valid", masks=True),
        class_names=shelf.classes,
        out=tmp_path / "out",
        progress=False,
    )
    # classification: kNN on embeddings computed here
    with torch.no_grad():
        g = torch.cat([net(b["image"]) for b in gal])
        gl = torch.cat([b["label"] for b in gal])
        q = torch.cat([net(b["image"]) for b in qry])
        ql = torch.cat([b["label"] for b in qry])
    pred = knn_predict(q, g, gl, k=5)
    assert res.per_image.pred == pred.tolist() and res.per_image.labels == ql.tolist()
    ev = evaluate(pred, ql, 4)
    assert res.macro_f1 == pytest.approx(ev.macro_f1) and res.errors == ev.errors
    assert res.classification.images == 16 and res.classification.valid_accuracy is not None
    # recipes: the summary is the mean of the records, Table-1 outcome = correct & verdict
    recs = ec.DatasetRecords(tmp_path / "out" / "records", RECIPES, 32, 16)
    for summary, recipe in zip(res.recipes, RECIPES):
        energy = recs.column("energy_in_box", recipe)
        assert summary.energy_in_box == pytest.approx(float(torch.nanmean(energy.double())))
        verdict = recs.column("verdict", recipe)
        assert summary.judged.k == int(verdict.sum()) and summary.judged.n == 16
        both = verdict & (pred == ql)
        assert summary.class_and_features.k == int(both.sum())
        assert summary.region == "box"
        assert 0 < summary.chance < 1 and summary.ceiling <= 1
    # interventions: masks, both splits, BG-gap by definition
    assert [iv.split for iv in res.interventions] == ["queries", "valid"]
    for iv in res.interventions:
        assert iv.region == "mask"
        gap = iv.accuracy_after["mixed_same"] - iv.accuracy_after["mixed_rand"]
        assert iv.bg_gap == pytest.approx(gap)
    only_fg = res.per_image.intervened_pred["only_fg"]
    masks = torch.cat([b["mask"] for b in qry])
    with torch.no_grad():
        e_fg = net(ec.interventions.only_fg(torch.cat([b["image"] for b in qry]), masks))
    assert only_fg == knn_predict(e_fg, g, gl, k=5).tolist()
    # files
    out = tmp_path / "out"
    for name in ("results.json", "report.md", "report.html", "examples.png"):
        assert (out / name).is_file()
    again = AuditResult.load_json(out / "results.json")
    assert again == res
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "BG-gap" in html
    assert json.loads((out / "results.json").read_text())["schema_version"] == "embedcam.audit/1"


def test_audit_classification_export_says_what_it_skipped(shelf, tmp_path, capsys):
    from rich.console import Console

    class NoBoxes(torch.utils.data.Dataset):
        def __init__(self, ds):
            self.ds = ds

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            return self.ds[i]["image"], self.ds[i]["label"]

    gal = DataLoader(NoBoxes(ImageDataset(shelf, size=32, split="train")), batch_size=8)
    qry = DataLoader(NoBoxes(ImageDataset(shelf, size=32, split="test")), batch_size=8)
    console = Console(file=None, width=200, force_terminal=False)
    res = ec.audit(tiny_net(), gal, qry, RECIPES[0], console=console)
    steps = {s.step: s.reason for s in res.skipped}
    assert "box scores, judge and interventions" in steps
    assert "no boxes or masks" in steps["box scores, judge and interventions"]
    assert "validation accuracy" in steps
    assert res.recipes[0].judged is None and res.recipes[0].region is None
    assert res.recipes[0].mean_score is not None
    printed = capsys.readouterr().out
    assert "skipped box scores, judge and interventions" in printed


def test_audit_trust_checks_equal_the_trust_functions_on_the_first_images(shelf, tmp_path):
    from rich.console import Console

    from embedcam import trust

    net, gal, qry = tiny_net(), loader(shelf, "train"), loader(shelf, "test")
    console = Console(record=True, width=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)  # the untrained tiny net
        res = ec.audit(
            net, gal, qry, RECIPES, trust_images=5, trust_steps=3, out=tmp_path / "out",
            figure=False, console=console,
        )  # fmt: skip
    assert [t.recipe for t in res.trust] == ["last", "early"]
    # the same checks called directly on the first five query images, one recipe at a time
    images = torch.cat([b["image"] for b in qry])[:5]
    labels = torch.cat([b["label"] for b in qry])[:5]
    with torch.no_grad():
        g = torch.cat([net(b["image"]) for b in gal])
    cents = ec.ClassCentroids.from_embeddings(g, torch.cat([b["label"] for b in gal]))
    for summary, recipe in zip(res.trust, RECIPES):
        cam = recipe.cam(net)
        target = recipe.make_target(cents.centroids, labels)
        spec = trust.class_specificity(cam, images, cents.centroids, labels)
        rand = trust.randomization_check(cam, images, target)
        maps = cam(images, target)
        shown = maps.signed_maps() if recipe.signed else maps.maps
        faith = trust.deletion_insertion(net, images, shown, target, steps=3)
        assert summary.images == 5 and summary.steps == 3
        assert summary.specific == pytest.approx(float(spec.specific.float().mean()))
        assert summary.specificity_rho == pytest.approx(float(spec.rank_correlation.mean()))
        last = rand.rank_correlation[-1].abs()
        assert summary.randomization_rho == pytest.approx(float(last.mean()))
        assert summary.unchanged == pytest.approx(float(rand.unchanged.float().mean()))
        assert summary.deletion_auc == pytest.approx(float(faith.deletion_auc.mean()))
        assert summary.insertion_auc == pytest.approx(float(faith.insertion_auc.mean()))
    # tables: the console and the report show every checked recipe
    printed = console.export_text()
    assert "can the maps be trusted?" in printed and "early" in printed
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Can the maps be trusted?" in html and "impostor rho" in html
    assert AuditResult.load_json(tmp_path / "out" / "results.json").trust == res.trust
    reference = ec.Recipe(layer="3", target="reference", name="ref")
    with pytest.raises(ConfigurationError, match="no class to be specific to|reference"):
        trust.check_recipe(net, reference, images, labels, cents.centroids)
    with pytest.raises(ConfigurationError, match="trust_images"):
        ec.audit(net, gal, qry, RECIPES, trust_images=-1, progress=False)
    with pytest.raises(ConfigurationError, match="trust_steps"):
        ec.audit(net, gal, qry, RECIPES, trust_images=2, trust_steps=0, progress=False)


def test_audit_bad_input(shelf):
    net, gal, qry = tiny_net(), loader(shelf, "train"), loader(shelf, "test")
    with pytest.raises(ConfigurationError, match="classifier"):
        ec.audit(net, gal, qry, RECIPES, classifier="svm", progress=False)
    with pytest.raises(ConfigurationError, match="k=500 exceeds"):
        ec.audit(net, gal, qry, RECIPES, k=500, progress=False)
    few = [(torch.rand(4, 3, 32, 32), torch.tensor([0, 0, 1, 1]))]
    with pytest.raises(DataError, match=r"query classes \['2'\] have no gallery images"):
        ec.audit(net, few, [(torch.rand(2, 3, 32, 32), torch.tensor([2, 0]))], RECIPES[0], k=1)
    with pytest.raises(DataError, match="cannot read audit results"):
        AuditResult.load_json(__file__)


def _fake(name: str, pred: list[int], verdict: list[bool]) -> AuditResult:
    labels = [0, 1, 0, 1, 0, 1]
    return AuditResult(
        name=name,
        classes=["a", "b"],
        classification=Classification(
            classifier="knn",
            k=1,
            images=6,
            macro_f1=0.5,
            accuracy=0.5,
            errors=sum(p != t for p, t in zip(pred, labels)),
        ),
        health=EmbeddingHealth(
            images=6, dim=2, effective_rank=2.0, mean_pairwise_cosine=0.0, collapsed=False
        ),
        recipes=[
            RecipeSummary(
                recipe=ec.Recipe(layer="x", name="r"), images=6, mean_score=0.5, empty_rate=0.0
            )
        ],
        judge=ec.Judge(),
        per_image=PerImage(
            ids=[str(i) for i in range(6)], labels=labels, pred=pred, verdict={"r": verdict}
        ),
    )


def test_compare_hand_computed(tmp_path):
    # images 0-3 are hard (someone errs); a gets 0, 1, 3 right with features, b none
    a = _fake("a", [0, 1, 1, 1, 0, 1], [True, True, True, True, True, True])
    b = _fake("b", [1, 0, 0, 0, 0, 1], [True, True, True, False, True, True])
    cmp = ec.compare([a, b], out=tmp_path)
    assert cmp.hard_images == [0, 1, 2, 3]
    assert ec.Comparison.model_validate_json((tmp_path / "comparison.json").read_text()) == cmp
    assert "3/4 (75.0%)" in (tmp_path / "comparison.md").read_text()
    assert "McNemar" in (tmp_path / "comparison.html").read_text()
    rows = {r.name: r for r in cmp.rows}
    assert rows["a"].hard_correct.k == 3 and rows["a"].hard_correct.n == 4  # 0, 1, 3
    assert rows["b"].hard_correct.k == 1  # image 2 (class right, features right)
    (pair,) = cmp.pairwise
    assert (pair.only_a, pair.only_b) == (3, 1)
    # exact McNemar: 2 * P(X <= 1), X ~ Bin(4, 1/2) = 2 * 5/16
    assert pair.p_value == pytest.approx(0.625)
    assert cmp.cochran_q_p is None
    c = _fake("c", [0, 1, 0, 1, 1, 1], [False] * 6)
    assert ec.compare({"a": a, "b": b, "c": c}).cochran_q_p is not None
    assert not math.isnan(cmp.rows[0].macro_f1)


def test_compare_refuses_mismatched_audits():
    a = _fake("a", [0, 1, 1, 1, 0, 1], [True] * 6)
    with pytest.raises(ConfigurationError, match="at least two"):
        ec.compare([a])
    other = _fake("b", [0] * 6, [True] * 6)
    other.per_image.labels = [1, 1, 0, 1, 0, 1]
    with pytest.raises(ConfigurationError, match="not of the same query images"):
        ec.compare([a, other])
    with pytest.raises(ConfigurationError, match="unique"):
        ec.compare([a, a])
    with pytest.raises(ConfigurationError, match="no verdicts for recipe 'zz'"):
        ec.compare([a, _fake("b", [0] * 6, [True] * 6)], recipe="zz")


def test_judge_from_scores_equals_judge_on_maps(shelf):
    net = tiny_net()
    qry = loader(shelf, "test")
    cents = ec.ClassCentroids.fit(net, loader(shelf, "train"), progress=False)
    for judge in (
        ec.Judge(),
        ec.Judge(criterion="paper", positive_share=0.3),
        ec.Judge(criterion=("energy", "pointing"), combine="any", energy=0.4),
    ):
        recs = ec.explain_dataset(net, qry, cents, RECIPES, judge=judge, progress=False)
        df = recs.to_pandas()
        assert np.array_equal(judge.from_scores(df).numpy(), df["verdict"].to_numpy(dtype=bool))
    with pytest.raises(ConfigurationError, match="theta"):
        ec.Judge(criterion="region_iou", theta=0.3).from_scores(df)


def test_embedding_health_flags_collapse():
    torch.manual_seed(0)
    healthy = torch.randn(200, 32)
    h = ec.embedding_health(healthy)
    assert h.effective_rank > 20 and abs(h.mean_pairwise_cosine) < 0.05 and not h.collapsed
    assert ec.embedding_health(torch.eye(8)).effective_rank == pytest.approx(8.0)
    collapsed = torch.ones(200, 32) + 0.01 * torch.randn(200, 32)
    c = ec.embedding_health(collapsed)
    assert c.mean_pairwise_cosine > 0.99 and c.collapsed and c.effective_rank < 2
    # hand case: two orthogonal pairs -> mean cosine over the 6 distinct pairs
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert ec.embedding_health(x).mean_pairwise_cosine == pytest.approx(2 / 6)
    with pytest.raises(ec.errors.EmbedcamValueError, match="N >= 2"):
        ec.embedding_health(torch.ones(1, 3))


def test_compare_outputs_are_all_or_nothing(tmp_path, monkeypatch):
    # A failure while writing comparison.html used to leave no comparison.json (deleted first)
    # beside a new comparison.md.
    a = _fake("a", [0, 1, 1, 1, 0, 1], [True] * 6)
    b = _fake("b", [1, 0, 0, 0, 0, 1], [True, True, True, False, True, True])
    ec.compare([a, b], out=tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    from embedcam.report import document

    def broken(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(document.Report, "write_html", broken)
    c = _fake("c", [0, 1, 0, 1, 1, 1], [False] * 6)
    with pytest.raises(OSError):
        ec.compare([a, c], out=tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_killed_export_build_is_removed_by_the_next_one(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that no longer runs
    left = tmp_path / f".export.{proc.pid}.k1ll3d00.tmp"
    (left / "train").mkdir(parents=True)
    cfg = ShelfConfig(image_size=32, families=2, siblings=2, images_per_class={"train": 1})
    ec.datasets.generate_shelf(tmp_path / "export", cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_comparison_and_audit_reprs_are_one_short_line():
    a = _fake("a", [0, 1, 1, 1, 0, 1], [True] * 6)
    b = _fake("b", [1, 0, 0, 0, 0, 1], [True, True, True, False, True, True])
    cmp = ec.compare([a, b])
    text = repr(cmp)
    assert text.startswith("Comparison(recipe=")
    assert "models=['a', 'b'], hard_images=4," in text and "pairwise=1" in text
    assert "\n" not in text and len(text) < 160
    assert str(a).startswith("name='a' images=6")
