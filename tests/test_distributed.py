"""Two gloo processes under torchrun give exactly the records and audit of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    import embedcam as ec

    torch.set_num_threads(1)
    if "RANK" in os.environ:
        dist.init_process_group("gloo")

    class Shapes(Dataset):
        # 37 images (not a multiple of anything), boxes, masks; 3 classes
        def __len__(self):
            return 37
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            img = torch.rand(3, 16, 16, generator=g)
            x0 = i % 8
            mask = torch.zeros(16, 16, dtype=torch.bool)
            mask[2:12, x0:x0 + 8] = True
            img[:, mask] += 0.5 * (i % 3)
            box = torch.tensor([[float(x0), 2.0, x0 + 8.0, 12.0]])
            return {"image": img, "label": i % 3, "boxes": box, "mask": mask, "index": i}

    def collate(items):
        return {
            "image": torch.stack([t["image"] for t in items]),
            "label": torch.tensor([t["label"] for t in items]),
            "boxes": [t["boxes"] for t in items],
            "mask": torch.stack([t["mask"] for t in items]),
            "index": torch.tensor([t["index"] for t in items]),
        }

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                        nn.Flatten(), nn.Linear(24, 5))
    loader = DataLoader(Shapes(), batch_size=4, collate_fn=collate)
    out = sys.argv[1]
    cents = ec.ClassCentroids.fit(net, loader, progress=False)
    recipes = [ec.Recipe(layer="1"), ec.Recipe(layer="1", target="contrastive", signed=True)]
    ec.explain_dataset(net, loader, cents, recipes, out=out + "/records", part_size=8,
                       progress=False)
    res = ec.audit(net, loader, loader, recipes, k=3, progress=False)
    rank = dist.get_rank() if dist.is_initialized() else 0
    with open(f"{out}/audit-{rank}.json", "w") as fh:
        fh.write(res.model_dump_json(exclude={"timings", "versions"}))
    torch.save(cents.centroids, f"{out}/centroids-{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()
    """
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    script = tmp / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    one, two = tmp / "one", tmp / "two"
    one.mkdir()
    two.mkdir()
    r1 = subprocess.run([sys.executable, str(script), str(one)], env=env, capture_output=True)
    assert r1.returncode == 0, r1.stderr.decode()[-3000:]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(two),
    ]
    r2 = subprocess.run(cmd, env=env, capture_output=True, timeout=240)
    assert r2.returncode == 0, r2.stderr.decode()[-3000:]
    return one, two


def test_records_equal_one_process(runs):
    one, two = runs
    a = sorted(p.name for p in (one / "records").glob("part-*.parquet"))
    b = sorted(p.name for p in (two / "records").glob("part-*.parquet"))
    assert a == b == [f"part-{k:06d}.parquet" for k in range(5)]  # 37 images, parts of 8
    ta, tb = pq.read_table(one / "records"), pq.read_table(two / "records")
    assert ta.num_rows == 74
    assert ta.column("position").to_pylist() == [p for p in range(37) for _ in range(2)]
    assert ta.equals(tb)
    manifest = json.loads((two / "records" / "_manifest.json").read_text())
    assert manifest["complete"] and manifest["images"] == 37


def test_audit_and_centroids_equal_one_process(runs):
    import torch

    one, two = runs
    single = json.loads((one / "audit-0.json").read_text())
    for rank in (0, 1):
        assert json.loads((two / f"audit-{rank}.json").read_text()) == single
        assert torch.equal(
            torch.load(two / f"centroids-{rank}.pt"), torch.load(one / "centroids-0.pt")
        )
    assert single["interventions"][0]["images"] == 37
