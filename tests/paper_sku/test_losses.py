import math

import pytest
import torch
import torch.nn.functional as F
from paper_sku.losses import (
    FlexibleMarginTripletLoss,
    FocalTripletLoss,
    TripletLoss,
    difference_degree,
    pairwise_distance,
)
from paper_sku.mining import BatchHardMiner, SemiHardMiner
from paper_sku.reducers import MeanActiveReducer, MeanReducer, SumReducer
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.miners import TripletMarginMiner

from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError


def random_batch(seed: int, b: int = 12, d: int = 8, classes: int = 4, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(b, d, generator=gen, dtype=dtype), dim=1)
    labels = torch.randint(classes, (b,), generator=gen)
    labels[:4] = torch.tensor([0, 0, 1, 1])  # at least 2 classes and a positive pair
    return emb, labels


def literal_distance(u: torch.Tensor, v: torch.Tensor, distance: str) -> float:
    sq = float(((u - v) ** 2).sum())
    return sq if distance == "squared" else math.sqrt(sq)


def tf_semihard_literal(emb, labels, margin, distance, phi=lambda d: d, pair_margin=None):
    """The TensorFlow definition, one ordered positive pair at a time (REFERENCE.md section 1).

    With ``pair_margin(a, n)`` the selection ranks negatives by phi(D_an) - m(a, n).
    """
    b = emb.shape[0]
    m = pair_margin or (lambda a, n: margin)
    total, count = 0.0, 0
    for a in range(b):
        for p in range(b):
            if p == a or labels[p] != labels[a]:
                continue
            d_ap = phi(literal_distance(emb[a], emb[p], distance))
            negs = [n for n in range(b) if labels[n] != labels[a]]
            d_an = {n: phi(literal_distance(emb[a], emb[n], distance)) for n in negs}
            outside = [n for n in negs if d_an[n] > d_ap]
            if outside:
                n = min(outside, key=lambda n: d_an[n] - m(a, n))
            else:
                n = max(negs, key=lambda n: d_an[n] - m(a, n))
            total += max(d_ap - d_an[n] + m(a, n), 0.0)
            count += 1
    return total / count


@pytest.mark.parametrize("distance", ["squared", "euclidean"])
@pytest.mark.parametrize("seed", range(8))
def test_semihard_triplet_equals_literal_tensorflow_definition(distance, seed):
    emb, labels = random_batch(seed)
    expected = tf_semihard_literal(emb, labels, 0.2, distance)
    got = TripletLoss(margin=0.2, distance=distance)(emb, labels)
    assert float(got) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("distance", ["squared", "euclidean"])
def test_semihard_triplet_float32_input_matches_literal(distance):
    emb, labels = random_batch(99, b=16, dtype=torch.float32)
    expected = tf_semihard_literal(emb.double(), labels, 0.3, distance)
    got = TripletLoss(margin=0.3, distance=distance)(emb, labels)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(expected, abs=1e-6)


# pytorch-metric-learning's reducer and ours, each with the PML semi-hard miner: the reducer is the
# loss's choice, independent of the miner.
PML_REDUCERS = [
    (pml_reducers.AvgNonZeroReducer, MeanActiveReducer),
    (pml_reducers.MeanReducer, MeanReducer),
    (pml_reducers.SumReducer, SumReducer),
]


@pytest.mark.parametrize("pml_reducer,our_reducer", PML_REDUCERS)
@pytest.mark.parametrize("distance,power", [("squared", 2), ("euclidean", 1)])
@pytest.mark.parametrize("seed", range(6))
def test_pml_style_equals_pytorch_metric_learning(distance, power, seed, pml_reducer, our_reducer):
    emb, labels = random_batch(seed, b=16, classes=3)
    margin = 0.3
    pml_distance = LpDistance(p=2, power=power)
    miner = TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=pml_distance)
    pml_loss = TripletMarginLoss(margin=margin, distance=pml_distance, reducer=pml_reducer())
    expected = pml_loss(emb, labels, miner(emb, labels))
    ours = TripletLoss(
        margin=margin, distance=distance, miner=SemiHardMiner("pml"), reducer=our_reducer()
    )
    assert float(ours(emb, labels)) == pytest.approx(float(expected), abs=1e-6)
    # and the same triplets
    a, p, n = miner(emb, labels)
    x = emb.double()
    dist = pairwise_distance(x, distance)
    mine = SemiHardMiner("pml")(dist, labels, torch.full_like(dist, margin))
    assert set(zip(a.tolist(), p.tolist(), n.tolist())) == set(
        zip(mine.anchor.tolist(), mine.positive.tolist(), mine.negative.tolist())
    )


def test_focal_equals_hand_formula_on_four_samples():
    # Unit vectors with squared distances D01 = D23 = 0.4, D12 = 0.8, D02 = D13 = 2.0, D03 = 3.2.
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    sigma, margin = 2.0, 1.0
    # Semi-hard negatives: (0,1)->2 (D=2.0), (1,0)->2 (D=0.8), (2,3)->1 (D=0.8), (3,2)->1 (D=2.0).
    per_pair = [
        max(math.exp(0.4 / sigma) - math.exp(2.0 / sigma) + margin, 0.0),
        max(math.exp(0.4 / sigma) - math.exp(0.8 / sigma) + margin, 0.0),
        max(math.exp(0.4 / sigma) - math.exp(0.8 / sigma) + margin, 0.0),
        max(math.exp(0.4 / sigma) - math.exp(2.0 / sigma) + margin, 0.0),
    ]
    expected = sum(per_pair) / 4  # = (e^0.2 - e^0.4 + 1) / 2 = 0.364800...
    assert expected == pytest.approx(0.3648, abs=1e-4)
    out = FocalTripletLoss(margin=margin, sigma=sigma).compute(emb, labels)
    assert float(out.loss) == pytest.approx(expected, abs=1e-12)
    assert (out.num_triplets, out.num_active, out.active_fraction) == (4, 2, 0.5)


@pytest.mark.parametrize("distance", ["squared", "euclidean"])
@pytest.mark.parametrize("sigma", [0.05, 0.3])
def test_focal_is_finite_at_extremes(distance, sigma):
    # Anchor 0 has its positive antipodal (D = 4 squared, 2 Euclidean) and both negatives on top
    # of it (D = 0), so semi-hard mining must take a negative at D = 0: the largest possible
    # loss, exp(4 / 0.05) = exp(80) ~ 5.5e34. Duplicate images give D = 0 pairs too.
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss = FocalTripletLoss(margin=0.2, sigma=sigma, distance=distance)(emb, labels)
    loss.backward()
    value = float(loss.detach())
    assert math.isfinite(value)
    assert torch.isfinite(emb.grad).all()
    d_max = 4.0 if distance == "squared" else 2.0
    # pairs (0,1): exp(d_max/s) - 1 + 0.2; (1,0): both negatives at d_max, none farther -> 0.2;
    # (2,3), (3,2): D_ap = 0, the farther negative 1 -> 1 - exp(d_max/s) + 0.2 < 0 -> 0.
    expected = (math.exp(d_max / sigma) - 1 + 0.2 + 0.2) / 4
    assert value == pytest.approx(expected, rel=1e-6)


def test_focal_overflow_raises_instead_of_inf():
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(EmbedcamValueError, match="overflowed"):
        FocalTripletLoss(sigma=0.01)(emb, torch.tensor([0, 0, 1, 1]))


@pytest.mark.parametrize("style", ["tensorflow", "pml"])
@pytest.mark.parametrize("seed", range(4))
def test_flexible_with_equal_labels_is_focal_with_base_margin(style, seed):
    emb, labels = random_batch(seed, b=16)
    table = {c: ("food", "dairy") for c in range(4)}
    for margin_fn in ("linear", "log"):
        reducer = MeanActiveReducer() if style == "pml" else MeanReducer()
        flex = FlexibleMarginTripletLoss(
            0.3,
            margin_fn=margin_fn,
            sigma=0.5,
            extra_labels=table,
            miner=SemiHardMiner(style),
            reducer=reducer,
        )
        focal = FocalTripletLoss(0.3, sigma=0.5, miner=SemiHardMiner(style), reducer=reducer)
        assert float(flex(emb, labels)) == pytest.approx(float(focal(emb, labels)), abs=1e-12)


HIERARCHY = {
    0: ("food", "dairy", "milk"),
    1: ("food", "dairy", "yogurt"),
    2: ("food", "snacks", "chips"),
    3: ("drink", "soda", "cola"),
}


def test_flexible_margins_match_hand_table_linear():
    loss = FlexibleMarginTripletLoss(0.1, margin_fn="linear", extra_labels=HIERARCHY)
    # k = 1 + levels at and below the first differing level: 0-1 differ at subgroup (k=2),
    # 0-2 at group (k=3), anything vs 3 at category (k=4).
    expected = [
        [0.0, 0.2, 0.3, 0.4],
        [0.2, 0.0, 0.3, 0.4],
        [0.3, 0.3, 0.0, 0.4],
        [0.4, 0.4, 0.4, 0.0],
    ]
    assert torch.allclose(loss.margin_table, torch.tensor(expected, dtype=torch.float64))
    labels = torch.tensor([3, 0, 0, 2])
    batch = loss.margin_matrix(labels, torch.float64)
    expected_batch = [[0, 0.4, 0.4, 0.4], [0.4, 0, 0, 0.3], [0.4, 0, 0, 0.3], [0.4, 0.3, 0.3, 0]]
    assert torch.allclose(batch, torch.tensor(expected_batch, dtype=torch.float64))


def test_flexible_margins_match_hand_table_log_and_levels():
    loss = FlexibleMarginTripletLoss(0.1, margin_fn="log", extra_labels=HIERARCHY)
    g2, g3, g4 = math.log2(3), 2.0, math.log2(5)  # ln(1 + k) / ln 2
    assert loss.margin_table[0, 1] == pytest.approx(0.1 * g2)
    assert loss.margin_table[0, 2] == pytest.approx(0.1 * g3)
    assert loss.margin_table[2, 3] == pytest.approx(0.1 * g4)
    # Only the category level: classes 0, 1, 2 share it (k=1), class 3 differs (k=2).
    coarse = FlexibleMarginTripletLoss(0.1, levels=[0], extra_labels=HIERARCHY)
    assert coarse.margin_table[0, 2] == pytest.approx(0.1)
    assert coarse.margin_table[1, 3] == pytest.approx(0.2)


def test_difference_degree_readings_differ_when_a_group_name_is_reused():
    table = torch.tensor([[0, 7], [1, 7], [0, 8]])  # (category, group); group 7 in two categories
    assert difference_degree(table, "hierarchical").tolist() == [[0, 3, 2], [3, 0, 3], [2, 3, 0]]
    assert difference_degree(table, "count").tolist() == [[0, 2, 2], [2, 0, 3], [2, 3, 0]]


@pytest.mark.parametrize("seed", range(6))
def test_flexible_semihard_uses_per_pair_margin_like_a_literal_loop(seed):
    emb, labels = random_batch(seed, b=14)
    sigma = 0.5
    loss = FlexibleMarginTripletLoss(0.2, sigma=sigma, extra_labels=HIERARCHY)
    table = loss.margin_table
    expected = tf_semihard_literal(
        emb,
        labels,
        None,
        "squared",
        phi=lambda d: math.exp(d / sigma),
        pair_margin=lambda a, n: float(table[labels[a], labels[n]]),
    )
    assert float(loss(emb, labels)) == pytest.approx(expected, abs=1e-6)


def test_flexible_margin_changes_the_loss():
    emb, labels = random_batch(3, b=16)
    flex = FlexibleMarginTripletLoss(0.2, sigma=0.5, extra_labels=HIERARCHY)
    focal = FocalTripletLoss(0.2, sigma=0.5)
    assert float(flex(emb, labels)) > float(focal(emb, labels))


def test_batch_hard_loss_equals_literal():
    emb, labels = random_batch(5, b=12)
    margin = 0.2
    total, count = 0.0, 0
    for a in range(12):
        pos = [p for p in range(12) if p != a and labels[p] == labels[a]]
        neg = [n for n in range(12) if labels[n] != labels[a]]
        if not pos:
            continue
        d_ap = max(literal_distance(emb[a], emb[p], "squared") for p in pos)
        d_an = min(literal_distance(emb[a], emb[n], "squared") for n in neg)
        total += max(d_ap - d_an + margin, 0.0)
        count += 1
    got = TripletLoss(margin, miner=BatchHardMiner())(emb, labels)
    assert float(got) == pytest.approx(total / count, abs=1e-9)


def test_loss_gradient_flows_and_pml_empty_mining_gives_zero():
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    loss = TripletLoss(0.2, miner=SemiHardMiner("pml"), reducer=MeanActiveReducer())(
        emb, torch.tensor([0, 0, 1, 1])
    )
    loss.backward()
    assert float(loss.detach()) == 0.0 and emb.grad is not None


# --- bad inputs -----------------------------------------------------------------------------


def test_single_class_batch_raises():
    emb, _ = random_batch(0, b=6)
    with pytest.raises(EmbedcamValueError, match="at least 2 classes"):
        TripletLoss()(emb, torch.zeros(6, dtype=torch.long))


def test_batch_without_positive_pairs_raises():
    emb, _ = random_batch(0, b=6)
    with pytest.raises(EmbedcamValueError, match="no positive pair"):
        TripletLoss()(emb, torch.arange(6))


def test_class_missing_from_table_raises():
    emb, _ = random_batch(0, b=6)
    loss = FlexibleMarginTripletLoss(0.2, extra_labels=HIERARCHY)
    with pytest.raises(EmbedcamValueError, match=r"class\(es\) \[7\] are missing"):
        loss(emb, torch.tensor([0, 0, 7, 7, 1, 1]))
    gappy = FlexibleMarginTripletLoss(0.2, extra_labels={0: ("a",), 2: ("b",)})
    with pytest.raises(EmbedcamValueError, match=r"\[1\] are missing"):
        gappy(emb, torch.tensor([0, 0, 1, 1, 2, 2]))


def test_nan_embeddings_raise():
    emb, labels = random_batch(0, b=6)
    emb[2, 1] = float("nan")
    with pytest.raises(EmbedcamValueError, match=r"NaN or inf in rows \[2\]"):
        TripletLoss()(emb, labels)


def test_shape_errors():
    emb, labels = random_batch(0, b=6)
    with pytest.raises(ShapeError, match=r"\(B, D\)"):
        TripletLoss()(emb[0], labels)
    with pytest.raises(ShapeError, match=r"labels must be \(6,\)"):
        TripletLoss()(emb, labels[:5])


def test_bad_configuration_raises():
    with pytest.raises(ConfigurationError, match="margin must be"):
        TripletLoss(margin=-0.1)
    with pytest.raises(ConfigurationError, match="sigma must be"):
        FocalTripletLoss(sigma=0.0)
    with pytest.raises(ConfigurationError, match="unknown distance 'cosine'"):
        TripletLoss(distance="cosine")
    with pytest.raises(ConfigurationError, match="unknown margin_fn"):
        FlexibleMarginTripletLoss(0.2, margin_fn="cubic", extra_labels=HIERARCHY)
    with pytest.raises(ConfigurationError, match="levels must be"):
        FlexibleMarginTripletLoss(0.2, levels=[5], extra_labels=HIERARCHY)
    with pytest.raises(EmbedcamValueError, match="same number"):
        FlexibleMarginTripletLoss(0.2, extra_labels={0: ("a", "b"), 1: ("a",)})
