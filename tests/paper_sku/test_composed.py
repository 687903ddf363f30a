"""The composed triplet loss, part by part, on batches whose distances can be checked by hand."""

import math
import warnings
from typing import ClassVar

import pytest
import torch
from paper_sku.distances import (
    BaseDistance,
    EuclideanDistance,
    FocalTransform,
    IdentityTransform,
)
from paper_sku.losses import (
    FlexibleMarginTripletLoss,
    FocalTripletLoss,
    TripletLoss,
    TripletLossBase,
)
from paper_sku.margins import FixedMargin, FlexibleMargin
from paper_sku.mining import BatchHardMiner, SemiHardMiner, TripletMiner, Triplets
from paper_sku.reducers import MeanActiveReducer, MeanReducer, SumReducer

from embedcam.errors import ConfigurationError

E = math.e

# Three unit vectors: x0 = (1, 0), x1 = (0, 1) of class 0, x2 = (-1, 0) of class 1. Squared
# distances: D01 = 2, D02 = 4, D12 = 2 (all exact in floating point).
# TensorFlow semi-hard mining takes two triplets:
#   anchor 0, positive 1: the negative 2 is farther than the positive (4 > 2): (D_ap, D_an) = (2, 4)
#   anchor 1, positive 0: no negative is farther (2 is not > 2), take the farthest: (2, 2)
THREE = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
THREE_LABELS = torch.tensor([0, 0, 1])


def loss_of(transform, margin_rule, reducer, miner=None, emb=THREE, labels=THREE_LABELS):
    loss = TripletLossBase(
        miner=SemiHardMiner() if miner is None else miner,
        transform=transform,
        margin_rule=margin_rule,
        reducer=reducer,
    )
    return loss.compute(emb, labels)


def test_distance_of_the_three_points():
    d = EuclideanDistance()(THREE)
    assert d.tolist() == [[0.0, 2.0, 4.0], [2.0, 0.0, 2.0], [4.0, 2.0, 0.0]]
    plain = EuclideanDistance(squared=False)(THREE)
    assert plain[0, 2].item() == 2.0
    assert plain[0, 1].item() == pytest.approx(math.sqrt(2), abs=1e-15)


@pytest.mark.parametrize(
    "reducer,expected",
    [
        # losses [2 - 4 + 0.5]_+ = 0 and [2 - 2 + 0.5]_+ = 0.5
        (MeanReducer(), 0.25),
        (MeanActiveReducer(), 0.5),
        (SumReducer(), 0.5),
    ],
)
def test_identity_fixed_margin_each_reducer(reducer, expected):
    out = loss_of(IdentityTransform(), FixedMargin(0.5), reducer)
    assert float(out.loss) == pytest.approx(expected, abs=1e-15)
    assert (out.num_triplets, out.num_active, out.active_fraction) == (2, 1, 0.5)


@pytest.mark.parametrize(
    "reducer,expected",
    [
        # margin 2.5: losses [2 - 4 + 2.5]_+ = 0.5 and [2 - 2 + 2.5]_+ = 2.5, both active
        (MeanReducer(), 1.5),
        (MeanActiveReducer(), 1.5),
        (SumReducer(), 3.0),
    ],
)
def test_identity_large_margin_all_active(reducer, expected):
    out = loss_of(IdentityTransform(), FixedMargin(2.5), reducer)
    assert float(out.loss) == pytest.approx(expected, abs=1e-15)
    assert out.num_active == 2


@pytest.mark.parametrize(
    "reducer,expected",
    [
        # sigma 1, margin 5: [e^2 - e^4 + 5]_+ = 5 - 47.21 < 0 -> 0 and [e^2 - e^2 + 5]_+ = 5
        (MeanReducer(), 2.5),
        (MeanActiveReducer(), 5.0),
        (SumReducer(), 5.0),
    ],
)
def test_focal_transform_fixed_margin(reducer, expected):
    out = loss_of(FocalTransform(sigma=1.0), FixedMargin(5.0), reducer)
    assert float(out.loss) == pytest.approx(expected, abs=1e-12)


def test_focal_transform_with_wide_kernel():
    # sigma 2: phi(2) = e, phi(4) = e^2; margin 5: losses e - e^2 + 5 = 0.3292 and 5.
    out = loss_of(FocalTransform(sigma=2.0), FixedMargin(5.0), SumReducer())
    assert float(out.loss) == pytest.approx(E - E**2 + 10.0, abs=1e-12)
    assert float(out.loss) == pytest.approx(5.3292, abs=1e-4)


def test_flexible_margin_on_three_points():
    # classes 0 and 1 differ at the coarsest of 2 levels: k = 3; linear margin 0.25 * 3 = 0.75,
    # log margin 0.25 * log2(4) = 0.5. Losses [2 - 4 + m]_+ = 0 and [2 - 2 + m]_+ = m.
    table = {0: ("food", "milk"), 1: ("drink", "cola")}
    for fn, m in (("linear", 0.75), ("log", 0.5)):
        rule = FlexibleMargin(0.25, fn, extra_labels=table)
        out = loss_of(IdentityTransform(), rule, MeanReducer())
        assert float(out.loss) == pytest.approx(m / 2, abs=1e-15)
        assert float(loss_of(IdentityTransform(), rule, SumReducer()).loss) == pytest.approx(m)


# Four unit vectors: x0 = (1, 0), x1 = (0, 1) of class 0, x2 = (-1, 0) of class 1, x3 = (0, -1) of
# class 2. D01 = 2, D02 = 4, D03 = 2, D12 = 2, D13 = 4. Flexible margins with base 0.5, linear:
# classes 0/1 share the category (k = 2, m = 1.0), classes 0/2 do not (k = 3, m = 1.5).
FOUR = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
FOUR_LABELS = torch.tensor([0, 0, 1, 2])
FOUR_TABLE = {0: ("food", "milk"), 1: ("food", "bread"), 2: ("drink", "cola")}


@pytest.mark.parametrize("transform", [IdentityTransform(), FocalTransform(1.0)])
def test_flexible_margin_batch_hard_picks_the_negative_with_the_largest_loss(transform):
    # Anchors 2 and 3 have no positive. Anchor 0 (positive 1 at D = 2): the negative 3 at D = 2
    # with m = 1.5 beats the negative 2 at D = 4 with m = 1.0; loss [phi(2) - phi(2) + 1.5]_+.
    # Anchor 1 (positive 0 at D = 2): the negative 2 at D = 2 with m = 1.0 beats the negative 3
    # at D = 4 with m = 1.5; loss 1.0. For both transforms, since phi(2) - phi(2) = 0.
    rule = FlexibleMargin(0.5, extra_labels=FOUR_TABLE)
    assert rule(FOUR_LABELS, torch.float64)[0].tolist() == [0.0, 0.0, 1.0, 1.5]
    expected = {"mean": 1.25, "active": 1.25, "sum": 2.5}
    for name, reducer in (("mean", MeanReducer()), ("active", MeanActiveReducer())):
        out = loss_of(transform, rule, reducer, BatchHardMiner(), FOUR, FOUR_LABELS)
        assert float(out.loss) == pytest.approx(expected[name], abs=1e-12)
        assert out.num_triplets == 2
    out = loss_of(transform, rule, SumReducer(), BatchHardMiner(), FOUR, FOUR_LABELS)
    assert float(out.loss) == pytest.approx(expected["sum"], abs=1e-12)


def test_gradient_of_the_sum_by_hand():
    # Margin 2.5, both triplets active: L = (D01 - D02 + 2.5) + (D10 - D12 + 2.5) with
    # D_uv = ||x_u - x_v||^2. dL/dx0 = 2(x2 - x1) + 2(x0 - x1) = (0, -4),
    # dL/dx1 = 4(x1 - x0) - 2(x1 - x2) = (-6, 2), dL/dx2 = -2(x2 - x0) - 2(x2 - x1) = (6, 2).
    emb = THREE.clone().requires_grad_(True)
    out = loss_of(IdentityTransform(), FixedMargin(2.5), SumReducer(), emb=emb)
    out.loss.backward()
    expected = torch.tensor([[0.0, -4.0], [-6.0, 2.0], [6.0, 2.0]], dtype=torch.float64)
    assert torch.allclose(emb.grad, expected, atol=1e-12)
    # the mean halves it
    emb.grad = None
    loss_of(IdentityTransform(), FixedMargin(2.5), MeanReducer(), emb=emb).loss.backward()
    assert torch.allclose(emb.grad, expected / 2, atol=1e-12)


def test_reducer_is_independent_of_the_miner():
    # PML-style semi-hard keeps 0 < D_an - D_ap <= m: with m = 2.5 only (anchor 0, D_an - D_ap = 2),
    # loss [2 - 4 + 2.5]_+ = 0.5; with TF-style mining the same reducers see 0.5 and 2.5.
    pml = SemiHardMiner("pml")
    for reducer in (MeanReducer(), MeanActiveReducer(), SumReducer()):
        out = loss_of(IdentityTransform(), FixedMargin(2.5), reducer, pml)
        assert (float(out.loss), out.num_triplets) == (pytest.approx(0.5), 1)
    tf = SemiHardMiner()
    sums = float(loss_of(IdentityTransform(), FixedMargin(2.5), SumReducer(), tf).loss)
    means = float(loss_of(IdentityTransform(), FixedMargin(2.5), MeanReducer(), tf).loss)
    assert (sums, means) == (pytest.approx(3.0), pytest.approx(1.5))


@pytest.mark.parametrize("reducer", [MeanReducer(), MeanActiveReducer(), SumReducer()])
def test_nothing_mined_gives_a_zero_that_backpropagates(reducer):
    # margin 0.5: the PML rule needs 0 < D_an - D_ap <= 0.5, but the gaps are 2 and 0.
    emb = THREE.clone().requires_grad_(True)
    out = loss_of(IdentityTransform(), FixedMargin(0.5), reducer, SemiHardMiner("pml"), emb=emb)
    assert (float(out.loss.detach()), out.num_triplets, out.active_fraction) == (0.0, 0, 0.0)
    out.loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_reducers_on_a_loss_vector():
    losses = torch.tensor([0.0, 0.5, 0.0, 1.0])
    assert float(MeanReducer()(losses)) == 0.375
    assert float(MeanActiveReducer()(losses)) == 0.75
    assert float(SumReducer()(losses)) == 1.5
    assert float(MeanActiveReducer()(torch.zeros(3))) == 0.0
    assert float(MeanReducer()(torch.zeros(0))) == 0.0


def test_injected_distance_is_used():
    class CosineDistance(BaseDistance):
        name = "cosine"

        def __call__(self, x):
            return 1.0 - x @ x.T

    # cosine distances D01 = 1, D02 = 2, D12 = 1: triplets (1, 2) and (1, 1); margin 0.5 ->
    # losses 0 and 0.5.
    loss = TripletLoss(0.5, distance=CosineDistance(), reducer=SumReducer())
    assert loss.distance == "cosine"
    assert float(loss(THREE, THREE_LABELS)) == pytest.approx(0.5, abs=1e-15)


def test_presets_are_compositions():
    focal = FocalTripletLoss(0.3, sigma=0.7, distance="euclidean")
    assert isinstance(focal.transform, FocalTransform) and focal.transform.sigma == 0.7
    assert isinstance(focal.margin_rule, FixedMargin) and focal.margin_rule.margin == 0.3
    assert isinstance(focal.reducer, MeanReducer) and focal.distance == "euclidean"
    plain = FlexibleMarginTripletLoss(0.2, focal=False, extra_labels=FOUR_TABLE)
    assert isinstance(plain.transform, IdentityTransform)
    assert not isinstance(plain, FocalTripletLoss)
    assert isinstance(FlexibleMarginTripletLoss(extra_labels=FOUR_TABLE).transform, FocalTransform)
    assert isinstance(TripletLoss().transform, IdentityTransform)


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_focal_preset_equals_the_composition(sigma):
    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(16, 4, generator=gen), dim=1)
    labels = torch.arange(4).repeat_interleave(4)
    preset = FocalTripletLoss(0.2, sigma=sigma)(emb, labels)
    composed = TripletLossBase(transform=FocalTransform(sigma), margin_rule=FixedMargin(0.2))
    assert torch.equal(preset, composed(emb, labels))
    assert float(preset) > 0


def test_pml_miner_without_reducer_keeps_mean_active_with_a_deprecation_warning():
    # The deprecated path: a loss built without a reducer keeps the old PML-style mean over the
    # active triplets for SemiHardMiner("pml"), and says how to choose.
    with pytest.warns(DeprecationWarning, match="reducer=MeanActiveReducer"):
        loss = TripletLoss(miner=SemiHardMiner("pml"))
    assert isinstance(loss.reducer, MeanActiveReducer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(TripletLoss(miner=SemiHardMiner()).reducer, MeanReducer)
        explicit = TripletLoss(miner=SemiHardMiner("pml"), reducer=MeanReducer())
        assert isinstance(explicit.reducer, MeanReducer)


def test_miner_reduction_attribute_is_deprecated():
    with pytest.warns(DeprecationWarning, match="reduction is deprecated"):
        assert SemiHardMiner("pml").reduction == "mean_nonzero"
    with pytest.warns(DeprecationWarning):
        assert BatchHardMiner().reduction == "mean"


def test_custom_miner_declaring_mean_nonzero_still_gets_it():
    class AllTriplets(TripletMiner):
        reduction: ClassVar[str] = "mean_nonzero"

        def mine(self, dist, is_pos, is_neg, margins):
            a, p, n = (is_pos[:, :, None] & is_neg[:, None, :]).nonzero(as_tuple=True)
            return Triplets(a, p, n)

    with pytest.warns(DeprecationWarning):
        loss = TripletLoss(0.5, miner=AllTriplets())
    # triplets (0, 1, 2): [2 - 4 + 0.5]_+ = 0 and (1, 0, 2): [2 - 2 + 0.5]_+ = 0.5 -> active mean
    assert float(loss(THREE, THREE_LABELS)) == pytest.approx(0.5)


def test_bad_parts_raise():
    with pytest.raises(ConfigurationError, match="reducer must be a TripletReducer"):
        TripletLoss(reducer="mean")
    with pytest.raises(ConfigurationError, match="transform must be a DistanceTransform"):
        TripletLossBase(transform=lambda d: d)
    with pytest.raises(ConfigurationError, match="margin_rule must be a MarginRule"):
        TripletLossBase(margin_rule=0.2)
    with pytest.raises(ConfigurationError, match="miner must be a TripletMiner"):
        TripletLossBase(miner="semihard")
    with pytest.raises(ConfigurationError, match="sigma must be"):
        FocalTransform(0.0)
    with pytest.raises(ConfigurationError, match="margin must be"):
        FixedMargin(-1.0)
    with pytest.raises(ConfigurationError, match="unknown distance"):
        EuclideanDistance.from_name("cosine")
