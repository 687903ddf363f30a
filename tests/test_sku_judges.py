"""The SKU benchmark's judge candidates: the learned judge's fit and cross-validation, labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skubench import analysis, report


def _stationary(x: np.ndarray, y: np.ndarray, model: dict, l2: float) -> np.ndarray:
    """The gradient of the penalised log-loss at the fitted weights (zero at the optimum)."""
    z = np.c_[np.ones(len(x)), (x - model["mean"]) / np.array(model["scale"])]
    w = np.r_[model["intercept"], model["coef"]]
    p = 1 / (1 + np.exp(-(z @ w)))
    penalty = np.r_[0.0, np.full(len(w) - 1, l2)]
    return z.T @ (p - y) + penalty * w


def test_logistic_fit_solves_its_score_equations():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.5, size=300) > 0).astype(float)
    for l2 in (0.1, 10.0):
        model = analysis.fit_logistic(x, y, l2=l2)
        np.testing.assert_allclose(_stationary(x, y, model, l2), 0.0, atol=1e-8)
    # the signs follow the generating weights; the third feature is noise
    coef = analysis.fit_logistic(x, y, l2=0.1)["coef"]
    assert coef[0] > 1 and coef[1] < -0.5 and abs(coef[2]) < 0.3


def test_a_huge_penalty_leaves_the_base_rate():
    x = np.arange(10.0)[:, None]
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1], dtype=float)
    model = analysis.fit_logistic(x, y, l2=1e9)
    assert abs(model["coef"][0]) < 1e-6
    assert model["intercept"] == pytest.approx(math.log(0.3 / 0.7), abs=1e-6)
    np.testing.assert_allclose(analysis.predict_logistic(model, x), 0.3, atol=1e-6)


def test_a_constant_feature_is_kept_finite():
    x = np.c_[np.ones(8), np.arange(8.0)]
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=float)
    model = analysis.fit_logistic(x, y, l2=1.0)
    assert model["scale"][0] == 1.0 and model["coef"][0] == 0.0
    assert np.isfinite(analysis.predict_logistic(model, x)).all()


def test_cross_validation_finds_a_feature_that_decides():
    # y is feature 1 > 0 exactly; feature 0 is noise: out-of-fold verdicts agree fully
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2))
    x[:, 1] += np.sign(x[:, 1]) * 0.5  # a margin around 0
    y = x[:, 1] > 0
    folds = np.arange(200) % 5
    l2, cut, kappa = analysis.cross_validate_logistic(x, y, folds)
    assert kappa == pytest.approx(1.0)
    assert l2 in analysis.LEARNED_PENALTIES and cut in analysis.LEARNED_CUTS
    # on pure noise the out-of-fold kappa stays near 0 (the in-sample one would not)
    noise = rng.normal(size=(200, 6))
    _, _, k_noise = analysis.cross_validate_logistic(noise, rng.random(200) > 0.5, folds)
    assert k_noise is not None and k_noise < 0.25


def test_judge_labels():
    assert report.judge_label({"map": {"criterion": "region_iou", "threshold": 0.4}}) == (
        "region_iou >= 0.4"
    )
    both = {
        "evidence": {"region": "top25%", "test": "lost"},
        "map": {"criterion": "energy", "threshold": 0.5},
    }
    assert report.judge_label(both) == "lost (top25%) and energy >= 0.5"
    assert report.judge_label({"evidence": {"region": "s>0", "test": "kept"}}) == "kept (s>0)"
    assert report.judge_label({"criterion": "learned", "threshold": 0.35}) == (
        "learned (p >= 0.35)"
    )
