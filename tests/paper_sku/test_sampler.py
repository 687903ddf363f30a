from collections import Counter

import pytest
import torch
from paper_sku.sampler import PKSampler

from embedcam.errors import ConfigurationError, DataError, EmbedcamValueError

IMBALANCED = [0] * 40 + [1] * 3 + [2] * 10 + [3] * 1 + [4] * 12 + [5] * 6


def classes_of(batch, labels=IMBALANCED):
    return [labels[i] for i in batch]


def test_every_batch_has_p_classes_with_k_images_each():
    sampler = PKSampler(IMBALANCED, p=4, k=5, num_batches=30, seed=1)
    assert len(sampler) == 30
    batches = list(sampler)
    assert len(batches) == 30
    for batch in batches:
        counts = Counter(classes_of(batch))
        assert len(batch) == 20 and len(counts) == 4 and set(counts.values()) == {5}
        for c in counts:  # indices really belong to their class
            assert all(IMBALANCED[i] == c for i in batch if IMBALANCED[i] == c)


def test_small_classes_are_filled_with_replacement_and_large_ones_without():
    sampler = PKSampler(IMBALANCED, p=6, k=5, num_batches=3, seed=0)
    for batch in sampler:
        by_class = {}
        for i in batch:
            by_class.setdefault(IMBALANCED[i], []).append(i)
        assert sorted(set(by_class[1])) == [40, 41, 42]  # all 3 images of class 1 used
        assert set(by_class[3]) == {53}  # the one-image class repeated
        assert len(set(by_class[0])) == 5  # no repeats when a class has >= K images


def test_classes_are_visited_evenly_despite_imbalance():
    sampler = PKSampler(IMBALANCED, p=2, k=2, num_batches=30, seed=3)
    counts = Counter(c for b in sampler for c in set(classes_of(b)))
    assert set(counts.values()) == {10}  # 30 batches x 2 classes = 10 rounds of 6 classes


def test_groups_are_balanced():
    # group "big" has 5 classes, group "small" only class 5
    groups = {0: "big", 1: "big", 2: "big", 3: "big", 4: "big", 5: "small"}
    sampler = PKSampler(IMBALANCED, p=2, k=2, num_batches=20, groups=groups, seed=0)
    for batch in sampler:
        assert {groups[c] for c in classes_of(batch)} == {"big", "small"}
    plain = PKSampler(IMBALANCED, p=2, k=2, num_batches=20, seed=0)
    with_5 = sum(5 in classes_of(b) for b in plain)
    assert with_5 < 20


def test_deterministic_per_seed_and_epoch_and_state_round_trip():
    a = PKSampler(IMBALANCED, p=3, k=2, seed=7)
    b = PKSampler(IMBALANCED, p=3, k=2, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != list(b)  # b is still at epoch 0
    c = PKSampler(IMBALANCED, p=3, k=2, seed=0)
    c.load_state_dict(a.state_dict())
    assert c.state_dict() == {"seed": 7, "epoch": 1}
    assert list(c) == epoch1
    rng_before = torch.get_rng_state()
    list(a)
    assert torch.equal(torch.get_rng_state(), rng_before)  # private generator only


def test_default_number_of_batches():
    assert len(PKSampler(IMBALANCED, p=2, k=4)) == len(IMBALANCED) // 8


def test_bad_inputs():
    with pytest.raises(ConfigurationError, match="p=7 classes per batch but the data has only 6"):
        PKSampler(IMBALANCED, p=7, k=2)
    with pytest.raises(ConfigurationError, match="k .* must be an int >= 2"):
        PKSampler(IMBALANCED, p=2, k=1)
    with pytest.raises(ConfigurationError, match="p .* must be an int >= 2"):
        PKSampler(IMBALANCED, p=1, k=2)
    with pytest.raises(DataError, match="no labels"):
        PKSampler([], p=2, k=2)
    with pytest.raises(EmbedcamValueError, match="integer class ids >= 0"):
        PKSampler([0, -1, 1], p=2, k=2)
    with pytest.raises(EmbedcamValueError, match=r"classes \[5\] have no group"):
        PKSampler(IMBALANCED, p=2, k=2, groups={c: "g" for c in range(5)})
