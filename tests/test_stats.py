import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from embedcam import stats as st
from embedcam.errors import EmbedcamValueError, ShapeError


def paired(a: int, b: int, c: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Outcome arrays with a both-correct, b only-A, c only-B and d both-wrong images."""
    xa = np.array([1] * a + [1] * b + [0] * c + [0] * d, dtype=bool)
    xb = np.array([1] * a + [0] * b + [1] * c + [0] * d, dtype=bool)
    return xa, xb


def test_wilson_reference_value():
    # REFERENCE.md section 4: 65/185 -> [28.6 %, 42.3 %]
    est, lo, hi = st.wilson_interval(65, 185)
    assert est == pytest.approx(65 / 185)
    assert round(lo * 100, 1) == 28.6 and round(hi * 100, 1) == 42.3


def test_wilson_edges_and_closed_form():
    assert st.wilson_interval(0, 10).low == 0.0
    assert st.wilson_interval(10, 10).high == 1.0
    # 0/10 at z = 1.96: upper = z^2 / (n + z^2)
    z = sps.norm.ppf(0.975)
    assert st.wilson_interval(0, 10).high == pytest.approx(z * z / (10 + z * z))


def test_clopper_pearson_matches_scipy_binomtest():
    for k, n in [(0, 12), (3, 12), (65, 185), (12, 12)]:
        ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        _, lo, hi = st.clopper_pearson_interval(k, n)
        assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)


def test_mcnemar_exact_hand_and_scipy():
    # b = 10, c = 2: P(X <= 2) = (1 + 12 + 66) / 4096 for Binomial(12, 1/2)
    assert st.mcnemar_exact(10, 2).p_value == pytest.approx(2 * 79 / 4096)
    # mid-p subtracts half of P(X = 2) = 66 / 4096
    assert st.mcnemar_exact(10, 2, mid_p=True).p_value == pytest.approx(2 * (79 - 33) / 4096)
    for b, c in [(0, 5), (7, 7), (3, 11), (25, 12)]:
        assert st.mcnemar_exact(b, c).p_value == pytest.approx(sps.binomtest(b, b + c).pvalue)
    assert st.mcnemar_exact(0, 0).p_value == 1.0
    assert st.mcnemar_exact(7, 7).p_value == 1.0


def test_mcnemar_from_outcomes_uses_discordant_pairs_only():
    xa, xb = paired(50, 10, 2, 30)
    res = st.mcnemar(xa, xb)
    assert (res.b, res.c) == (10, 2)
    assert res.p_value == pytest.approx(2 * 79 / 4096)
    assert st.paired_counts(torch.tensor(xa), torch.tensor(xb)) == (50, 10, 2, 30)


def test_newcombe_worked_example():
    # Newcombe (1998) example: 36 both, 12 only A, 2 only B, 0 neither -> 0.0569 to 0.3404
    est, lo, hi = st.newcombe_paired_interval(*paired(36, 12, 2, 0))
    assert est == pytest.approx(0.2)
    assert round(lo, 4) == 0.0569 and round(hi, 4) == 0.3404


def test_newcombe_independent_formula_with_correction():
    # ad - bc = 30 * 20 - 5 * 3 = 585 > n/2 = 29, so phi uses 585 - 29 = 556
    a, b, c, d = 30, 5, 3, 20
    n = a + b + c + d
    pa, la, ua = st.wilson_interval(a + b, n)
    pb, lb, ub = st.wilson_interval(a + c, n)
    phi = 556 / math.sqrt(35 * 23 * 33 * 25)
    lo = (pa - pb) - math.sqrt((pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2)
    hi = (pa - pb) + math.sqrt((ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2)
    got = st.newcombe_paired_interval(*paired(a, b, c, d))
    assert got.low == pytest.approx(lo) and got.high == pytest.approx(hi)


class _CountingRng:
    """A seeded numpy generator that records the shape of every ``integers`` draw."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self.draws: list[tuple[int, ...]] = []

    def integers(self, low: int, high: int, size: tuple[int, ...]) -> np.ndarray:
        self.draws.append(tuple(size))
        return self._rng.integers(low, high, size=size)


def test_bootstrap_covers_analytic_interval_and_is_vectorised_and_seeded(monkeypatch):
    xa, xb = paired(300, 60, 30, 110)
    analytic = st.newcombe_paired_interval(xa, xb)
    rngs: list[_CountingRng] = []

    def counting_default_rng(seed: int) -> _CountingRng:
        rngs.append(_CountingRng(seed))
        return rngs[-1]

    with monkeypatch.context() as m:
        m.setattr(st.np.random, "default_rng", counting_default_rng)
        counted = st.paired_bootstrap_interval(xa, xb, n_resamples=10_000, seed=1)
    boot = st.paired_bootstrap_interval(xa, xb, n_resamples=10_000, seed=1)
    assert counted == boot  # the counting generator draws what default_rng(1) draws
    # Vectorised: 10,000 resamples of 500 images in 2 draws (chunks of 2**22 // 500 = 8388
    # resamples), not one draw per resample.
    (rng,) = rngs
    assert rng.draws == [(8388, 500), (1612, 500)]
    assert boot.estimate == pytest.approx(0.06)
    assert abs(boot.low - analytic.low) < 0.01 and abs(boot.high - analytic.high) < 0.01
    assert boot.low < analytic.estimate < boot.high
    assert st.paired_bootstrap_interval(xa, xb, seed=1) == boot
    assert st.paired_bootstrap_interval(xa, xb, seed=2) != boot


def test_bootstrap_real_valued_scores():
    a = np.array([0.5, 0.7, 0.9, 0.6])
    b = a - 0.1  # constant difference: every resample has mean 0.1
    est, lo, hi = st.paired_bootstrap_interval(a, b, n_resamples=200)
    assert (est, lo, hi) == pytest.approx((0.1, 0.1, 0.1))


def test_cochran_q_hand_and_two_model_mcnemar():
    x = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0], [1, 0, 0]])
    q, df, p = st.cochran_q(x)
    assert q == pytest.approx(14 / 3) and df == 2
    assert p == pytest.approx(math.exp(-q / 2))  # chi2 with 2 df
    # with two models Q = (b - c)^2 / (b + c)
    xa, xb = paired(20, 9, 3, 8)
    q2 = st.cochran_q(np.stack([xa, xb], 1)).statistic
    assert q2 == pytest.approx((9 - 3) ** 2 / 12)
    assert st.cochran_q(np.ones((5, 3))) == (0.0, 2, 1.0)


def test_holm_and_pairwise_mcnemar():
    assert st.holm_correction([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert st.holm_correction([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    xa, xb = paired(20, 12, 1, 7)
    xc = xa.copy()
    res = st.pairwise_mcnemar(np.stack([xa, xb, xc], 1))
    assert [(r.i, r.j) for r in res] == [(0, 1), (0, 2), (1, 2)]
    raw = [r.p_value for r in res]
    assert raw[0] == pytest.approx(sps.binomtest(1, 13).pvalue)
    assert raw[1] == 1.0
    assert [r.p_holm for r in res] == pytest.approx(st.holm_correction(raw))
    assert [r.reject for r in res] == [True, False, True]


def test_cohen_kappa_hand_and_sklearn():
    from sklearn.metrics import cohen_kappa_score

    judge = np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    ref = np.array([1, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    ag = st.cohen_kappa(judge, ref)
    assert (ag.tp, ag.fp, ag.fn, ag.tn) == (4, 1, 1, 2)
    assert ag.sensitivity == pytest.approx(4 / 5) and ag.specificity == pytest.approx(2 / 3)
    assert ag.observed_agreement == pytest.approx(6 / 8)
    # p_e = (5 * 5 + 3 * 3) / 64
    assert ag.kappa == pytest.approx((6 / 8 - 34 / 64) / (1 - 34 / 64))
    assert ag.kappa == pytest.approx(cohen_kappa_score(judge, ref))
    const = st.cohen_kappa([1, 1, 1], [1, 1, 1])
    assert math.isnan(const.kappa) and math.isnan(const.specificity)


def test_bad_inputs():
    with pytest.raises(EmbedcamValueError, match="0 <= k <= n"):
        st.wilson_interval(5, 3)
    with pytest.raises(EmbedcamValueError, match="confidence must be in"):
        st.clopper_pearson_interval(1, 3, confidence=95)
    with pytest.raises(EmbedcamValueError, match="non-negative integers"):
        st.mcnemar_exact(-1, 3)
    with pytest.raises(ShapeError, match="same length"):
        st.mcnemar([1, 0, 1], [1, 0])
    with pytest.raises(EmbedcamValueError, match="bool or 0/1"):
        st.mcnemar([1, 2], [1, 0])
    with pytest.raises(EmbedcamValueError, match="empty"):
        st.newcombe_paired_interval([], [])
    with pytest.raises(EmbedcamValueError, match="NaN"):
        st.paired_bootstrap_interval([0.1, float("nan")], [0.2, 0.3])
    with pytest.raises(EmbedcamValueError, match="n_resamples"):
        st.paired_bootstrap_interval([1, 0], [0, 1], n_resamples=10)
    with pytest.raises(ShapeError, match="at least 2 models"):
        st.cochran_q(np.ones((4, 1)))
    with pytest.raises(EmbedcamValueError, match="p-values must be in"):
        st.holm_correction([0.2, 1.2])
    with pytest.raises(EmbedcamValueError, match="alpha must be in"):
        st.pairwise_mcnemar(np.ones((4, 2)), alpha=0)


def test_kappa_bootstrap_interval_matches_a_plain_loop():
    import numpy as np

    from embedcam.stats import cohen_kappa, kappa_bootstrap_interval

    rng = np.random.default_rng(5)
    judge = rng.random(60) < 0.5
    ref = np.where(rng.random(60) < 0.7, judge, ~judge)  # agrees 70% of the time
    ci = kappa_bootstrap_interval(judge, ref, n_resamples=500, seed=3)
    # the same draws, one cohen_kappa per resample
    idx = np.random.default_rng(3).integers(0, 60, size=(500, 60))
    ks = np.array([cohen_kappa(judge[i], ref[i]).kappa for i in idx])
    low, high = np.quantile(ks[~np.isnan(ks)], [0.025, 0.975])
    assert ci.estimate == pytest.approx(cohen_kappa(judge, ref).kappa)
    assert ci.low == pytest.approx(low) and ci.high == pytest.approx(high)
    assert ci.low < ci.estimate < ci.high
    perfect = kappa_bootstrap_interval(judge, judge, n_resamples=200)
    assert perfect == (1.0, 1.0, 1.0)
    with pytest.raises(EmbedcamValueError):
        kappa_bootstrap_interval(judge, ref, n_resamples=10)
