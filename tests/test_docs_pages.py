"""The Python code blocks of the how-to pages run, in order, as a reader would run them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

#: Blocks that need several processes or GPUs are shown, not run; they say so themselves.
NOT_RUN = ("init_process_group",)


def run_page(page: str) -> dict:
    """Execute every ``python`` block of ``docs/<page>`` in one namespace; return it."""
    text = (ROOT / "docs" / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    run = [b for b in blocks if not any(word in b for word in NOT_RUN)]
    assert run, f"docs/{page} has no python block to run"
    namespace: dict = {"__name__": f"docs_{page}"}
    for i, block in enumerate(run):
        exec(compile(block, f"docs/{page}[{i}]", "exec"), namespace)
    return namespace


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_audit_page(in_tmp):
    text = (ROOT / "docs" / "audit.md").read_text()
    assert len(re.findall(r"```python\n", text)) >= 3
    run_page("audit.md")
    assert (in_tmp / "audit" / "results.json").is_file()
    assert (in_tmp / "records" / "_manifest.json").is_file()


def test_install_page(in_tmp, capsys):
    ns = run_page("install.md")
    out = capsys.readouterr().out
    assert out.startswith(f"{ns['ec'].__version__} {torch.__version__}\n")
    assert "['gradcam', 'gradcam++', 'hirescam', 'xgradcam', 'layercam']" in out


def test_own_model_page(in_tmp, capsys):
    ns = run_page("own-model.md")
    out = capsys.readouterr().out.splitlines()
    # The shapes the page's comments promise, in the page's order.
    assert out == [
        "torch.Size([2, 2, 2]) torch.Size([2, 64, 64])",  # ResNet-50, 64 px / 32
        "torch.Size([2, 4, 4]) torch.Size([2, 32, 32])",  # ViT, 32 px / patch 8
        "torch.Size([2, 64, 64])",  # the eager module of a compiled model
        "torch.Size([2])",  # one score per image, from a dict output
    ]
    # The token map: 1 class token + 4 x 4 patches of width 3 -> (B, 3, 4, 4), patch order kept.
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)
    folded = ns["tokens_to_map"](tokens)
    assert tuple(folded.shape) == (2, 3, 4, 4)
    assert folded[0, :, 0, 1].tolist() == tokens[0, 2].tolist()  # patch 1 = token 2
    assert folded[1, :, 3, 3].tolist() == tokens[1, 16].tolist()  # the last patch
    assert ns["compiled"]._orig_mod is ns["net"]


def test_target_layer_page(in_tmp, capsys):
    ns = run_page("target-layer.md")
    rows = ns["rows"]
    assert [rows[k][0] for k in ("layer2", "layer3", "layer4")] == [(8, 8), (4, 4), (2, 2)]
    # The ceilings the page's table prints (they depend on the box and the grid only).
    ceilings = [round(rows[k][1], 3) for k in ("layer2", "layer3", "layer4")]
    assert ceilings == [0.766, 0.25, 0.22]
    text = (ROOT / "docs" / "target-layer.md").read_text()
    for layer, (grid, ceiling, energy) in rows.items():
        row = f"| `{layer}` | {grid[0]} x {grid[1]} | {ceiling:.3f} | {energy:.3f} |"
        assert row in text, row
    assert "chance: 0.0625" in capsys.readouterr().out


def test_retrieval_page(in_tmp, capsys):
    ns = run_page("retrieval.md")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "torch.Size([4, 64, 64]) torch.Size([4, 64, 64]) torch.Size([4])"
    assert out[1] == "4 True"
    ranks = ns["ranks"]
    assert out[2] == f"{ranks.indices.tolist()} {ranks.correct.tolist()}"
    assert 0 not in ranks.indices.tolist()  # exclude=0
    assert out[3] == "(4, 4, 4) True"  # 2 x 2 grids at 64 px, linear fc
    assert out[4] == "(64, 64)"
    assert out[5] == "tensor([True]) tensor([True])"
    assert out[6] == "1.0 False"  # a self-match: cosine 1, the decomposition is not empty
    assert out[7] == "True"  # the same rank list inside inference mode
    assert out[8] == "torch.Size([2, 4, 4])"
    assert (in_tmp / "ranks.png").is_file()
    text = (ROOT / "docs" / "retrieval.md").read_text()
    for img in ("img/retrieval_rank_list.png", "img/retrieval_point_to_point.png"):
        assert img in text and (ROOT / "docs" / img).is_file()


def test_trust_page(in_tmp, capsys):
    ns = run_page("trust.md")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "['fc', 'layer4.1.bn2', 'layer4.1.conv2']"
    assert out[1] == "(41, 8)"
    rand, spec = ns["rand"], ns["spec"]
    assert out[2] == f"{int(rand.unchanged.sum())} of 8 maps survive the randomisation"
    assert out[3] == str(spec.other_labels.tolist())
    assert all(o != lab for o, lab in zip(spec.other_labels.tolist(), ns["labels"].tolist()))
    assert out[5] == "torch.Size([8, 11])"
    base = ns["base"]
    assert out[7].startswith("energy in box") and f"chance {base.chance.mean():.3f}" in out[7]
    # the page's table is the SKU benchmark's trust section: 4 models x 4 recipes
    text = (ROOT / "docs" / "trust.md").read_text()
    assert text.count("| triplet |") == 4 and text.count("| control |") == 4
