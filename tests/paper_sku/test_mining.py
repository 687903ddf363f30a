import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from paper_sku.losses import TripletLoss
from paper_sku.mining import BatchHardMiner, SemiHardMiner
from paper_sku.model import PaperCNN

from embedcam.errors import ConfigurationError, ShapeError


def random_problem(seed: int, b: int, classes: int, constant_margin: bool):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (b,), generator=gen)
    labels[:4] = torch.tensor([0, 0, 1, 1])
    x = torch.randn(b, 5, generator=gen, dtype=torch.float64)
    dist = torch.cdist(x, x)
    margins = (
        torch.full((b, b), 0.3, dtype=torch.float64)
        if constant_margin
        else torch.rand(b, b, generator=gen, dtype=torch.float64)
    )
    return dist, labels, margins


def tf_literal(dist, labels, margins):
    """One negative per ordered positive pair, chosen as in the module docstring."""
    out = {}
    b = len(labels)
    for a in range(b):
        negs = [n for n in range(b) if labels[n] != labels[a]]
        for p in range(b):
            if p == a or labels[p] != labels[a]:
                continue
            outside = [n for n in negs if dist[a, n] > dist[a, p]]
            eff = {n: float(dist[a, n] - margins[a, n]) for n in negs}
            out[(a, p)] = min(outside, key=eff.get) if outside else max(negs, key=eff.get)
    return out


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    b=st.integers(4, 24),
    classes=st.integers(2, 6),
    constant=st.booleans(),
)
def test_tensorflow_semihard_vectorised_equals_literal(seed, b, classes, constant):
    dist, labels, margins = random_problem(seed, b, classes, constant)
    t = SemiHardMiner()(dist, labels, margins)
    expected = tf_literal(dist, labels, margins)
    got = {
        (a, p): n for a, p, n in zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist())
    }
    assert got.keys() == expected.keys()
    for key, n in got.items():
        a = key[0]
        # equal effective distances may pick another index; the loss only sees the value
        assert float(dist[a, n] - margins[a, n]) == float(
            dist[a, expected[key]] - margins[a, expected[key]]
        )
        assert labels[n] != labels[a]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(4, 16), classes=st.integers(2, 5))
def test_pml_semihard_equals_brute_force(seed, b, classes):
    dist, labels, margins = random_problem(seed, b, classes, constant_margin=False)
    t = SemiHardMiner("pml")(dist, labels, margins)
    expected = {
        (a, p, n)
        for a in range(b)
        for p in range(b)
        for n in range(b)
        if a != p
        and labels[a] == labels[p]
        and labels[n] != labels[a]
        and 0 < dist[a, n] - dist[a, p] <= margins[a, n]
    }
    assert set(zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist())) == expected


def test_batch_hard_picks_farthest_positive_and_hardest_negative():
    dist = torch.tensor(
        [
            [0.0, 1.0, 3.0, 2.0, 0.5],
            [1.0, 0.0, 0.2, 4.0, 4.0],
            [3.0, 0.2, 0.0, 1.0, 1.0],
            [2.0, 4.0, 1.0, 0.0, 9.0],
            [0.5, 4.0, 1.0, 9.0, 0.0],
        ]
    )
    labels = torch.tensor([0, 0, 0, 1, 2])  # classes 1 and 2 have no positive
    margins = torch.zeros(5, 5)
    margins[0, 4] = 0.0
    margins[0, 3] = 1.6  # effective 2.0 - 1.6 = 0.4 < 0.5: the margin makes 3 the hardest
    t = BatchHardMiner()(dist, labels, margins)
    assert t.anchor.tolist() == [0, 1, 2]
    assert t.positive.tolist() == [2, 0, 0]
    assert t.negative.tolist() == [3, 3, 3]


def test_semihard_at_batch_256_is_cheap_relative_to_a_training_step():
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(256, 128), dim=1).requires_grad_()
    labels = torch.arange(32).repeat_interleave(8)
    loss = TripletLoss()
    model = PaperCNN(width=0.25, in_size=64)
    x, y = torch.rand(64, 3, 64, 64), torch.arange(8).repeat_interleave(8)

    def best_of(fn, n=3):
        fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    t_loss = best_of(lambda: loss(emb, labels).backward())
    t_step = best_of(lambda: loss(model(x), y).backward())
    # measured ~0.012 s vs ~0.14 s on one core
    assert t_loss < 0.5 * t_step, (t_loss, t_step)


def test_miner_input_errors():
    dist = torch.zeros(4, 4)
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ShapeError, match="square"):
        SemiHardMiner()(torch.zeros(4, 3), labels, torch.zeros(4, 3))
    with pytest.raises(ShapeError, match="margins must be"):
        SemiHardMiner()(dist, labels, torch.zeros(3, 3))
    with pytest.raises(ConfigurationError, match="unknown semi-hard style 'hard'"):
        SemiHardMiner("hard")
