"""Tests of ClassCentroids: hand-computed means, streaming, save/load, distributed, bad inputs."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import embedcam as ec
from embedcam.errors import ConfigurationError, DataError, EmbedcamValueError, ShapeError

EMB = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0], [2.0, 2.0], [5.0, 1.0]])
LAB = torch.tensor([0, 0, 1, 1, 2])
# class 0: mean((1,0),(3,2)) = (2,1); class 1: mean((0,4),(2,2)) = (1,3); class 2: (5,1)
MEANS = torch.tensor([[2.0, 1.0], [1.0, 3.0], [5.0, 1.0]])


def batches(size: int, as_dict: bool = False) -> list:
    out = []
    for i in range(0, len(EMB), size):
        x, y = EMB[i : i + size], LAB[i : i + size]
        out.append({"image": x, "label": y} if as_dict else (x, y))
    return out


def test_hand_computed_means_tuple_and_dict_batches():
    for as_dict in (False, True):
        c = ec.ClassCentroids.fit(nn.Identity(), batches(2, as_dict), progress=False)
        assert torch.equal(c.centroids, MEANS)
        assert c.counts.tolist() == [2, 2, 1]
        assert c.centroids.dtype == torch.float32 and c.counts.dtype == torch.int64


def test_streaming_equals_one_shot_in_any_order():
    torch.manual_seed(0)
    emb = torch.randn(257, 16) + 1e4  # large offset: float32 accumulation would lose digits
    lab = torch.randint(0, 7, (257,))
    exact = torch.stack([emb[lab == k].double().mean(0) for k in range(7)]).float()
    perm = torch.randperm(257)
    loader = [(emb[perm][i : i + 5], lab[perm][i : i + 5]) for i in range(0, 257, 5)]
    streamed = ec.ClassCentroids.fit(nn.Identity(), loader, progress=False)
    one_shot = ec.ClassCentroids.from_embeddings(emb, lab)
    assert torch.equal(streamed.centroids, exact)
    assert torch.equal(one_shot.centroids, exact)


def test_embedding_fn_and_model_mode_restored():
    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(2)

        def forward(self, x):
            return {"embedding": x, "other": self.bn(x)}

    model = Twin().train()
    c = ec.ClassCentroids.fit(
        model, batches(5), progress=True, embedding_fn=lambda out: out["embedding"]
    )
    assert torch.equal(c.centroids, MEANS)
    assert model.training and model.bn.training
    assert model.bn.num_batches_tracked.item() == 0  # ran in eval mode
    with pytest.raises(ConfigurationError, match="embedding_fn"):
        ec.ClassCentroids.fit(model, batches(5), progress=False)


def test_normalize_option():
    c = ec.ClassCentroids.fit(nn.Identity(), batches(5), progress=False, normalize=True)
    assert torch.allclose(c.centroids, MEANS / MEANS.norm(dim=1, keepdim=True))
    assert c.normalized


def test_empty_class_is_an_error_naming_it():
    with pytest.raises(DataError, match=r"class\(es\) \[3\] have no samples"):
        ec.ClassCentroids.fit(nn.Identity(), batches(2), num_classes=4, progress=False)
    c = ec.ClassCentroids.fit(
        nn.Identity(), batches(2), num_classes=4, progress=False, allow_empty=True
    )
    assert c.counts.tolist() == [2, 2, 1, 0]
    assert torch.equal(c.centroids[3], torch.zeros(2))


def test_bad_labels_and_batches():
    with pytest.raises(EmbedcamValueError, match="label 2 is >= num_classes=2"):
        ec.ClassCentroids.fit(nn.Identity(), batches(5), num_classes=2, progress=False)
    with pytest.raises(EmbedcamValueError, match="negative label -1"):
        ec.ClassCentroids.fit(nn.Identity(), [(EMB[:2], torch.tensor([0, -1]))], progress=False)
    with pytest.raises(ShapeError, match="2 embeddings but 3 labels"):
        ec.ClassCentroids.fit(nn.Identity(), [(EMB[:2], torch.tensor([0, 1, 1]))], progress=False)
    with pytest.raises(DataError, match="'image' and 'label' keys"):
        ec.ClassCentroids.fit(nn.Identity(), [{"img": EMB, "label": LAB}], progress=False)
    with pytest.raises(DataError, match="no batches"):
        ec.ClassCentroids.fit(nn.Identity(), [], progress=False)
    nan = EMB.clone()
    nan[1, 0] = float("nan")
    with pytest.raises(EmbedcamValueError, match="NaN"):
        ec.ClassCentroids.fit(nn.Identity(), [(nan, LAB)], progress=False)


def test_save_load_round_trip(tmp_path):
    c = ec.ClassCentroids.fit(nn.Identity(), batches(2), progress=False)
    c.metadata["model"] = "identity"
    path = tmp_path / "sub" / "cents.pt"
    c.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["cents.pt"]  # no temp file left
    back = ec.ClassCentroids.load(path)
    assert torch.equal(back.centroids, c.centroids) and torch.equal(back.counts, c.counts)
    assert back.num_classes == 3 and back.dim == 2 and back.metadata == {"model": "identity"}


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ec.ClassCentroids.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="cannot read"):
        ec.ClassCentroids.load(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(DataError, match="not an embedcam centroid file"):
        ec.ClassCentroids.load(other)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # Rank 0 sees classes 0 and 1 only; rank 1 sees the rest: C must be agreed across ranks.
        shard = [(EMB[:2], LAB[:2]), (EMB[2:3], LAB[2:3])] if rank == 0 else [(EMB[3:], LAB[3:])]
        c = ec.ClassCentroids.fit(nn.Identity(), shard, progress=False)
        torch.save({"c": c.centroids, "n": c.counts}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_all_reduce_two_gloo_processes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["c"], MEANS)
        assert got["n"].tolist() == [2, 2, 1]
