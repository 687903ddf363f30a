"""Statistics for comparing models on the same images: Wilson, McNemar, Newcombe, Cochran.

A per-model rate ``k / n`` gets a Wilson or Clopper-Pearson interval. Two models judged on the
same images are compared *paired*: the exact McNemar test on the discordant counts, and an
interval for the difference of rates (Newcombe's hybrid score interval or a paired bootstrap).
More than two models: Cochran's Q, then pairwise McNemar with Holm's correction. The agreement of
the automated judge with a reference judgement: Cohen's kappa, sensitivity and specificity.

scipy provides the distributions: ``scipy.stats.norm`` (Wilson's z), ``scipy.stats.beta``
(Clopper-Pearson), ``scipy.stats.binom`` (exact and mid-p McNemar) and ``scipy.stats.chi2``
(Cochran's Q). scipy has no McNemar, Newcombe, Cochran's Q, Holm or kappa, so those are written
here from the cited formulas.

Outcome arrays are 1-D bool/0-1 sequences (numpy arrays, torch tensors or lists), one entry per
image; functions return Python floats or small named tuples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from embedcam.errors import EmbedcamValueError, ShapeError

__all__ = [
    "Interval",
    "McNemarResult",
    "CochranQResult",
    "PairwiseResult",
    "Agreement",
    "wilson_interval",
    "clopper_pearson_interval",
    "paired_counts",
    "mcnemar_exact",
    "mcnemar",
    "newcombe_paired_interval",
    "paired_bootstrap_interval",
    "cochran_q",
    "holm_correction",
    "pairwise_mcnemar",
    "cohen_kappa",
    "kappa_bootstrap_interval",
]


class Interval(NamedTuple):
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float


class McNemarResult(NamedTuple):
    """McNemar's test on the discordant pairs: ``b`` (only A correct), ``c`` (only B correct)."""

    b: int
    c: int
    p_value: float


class CochranQResult(NamedTuple):
    """Cochran's Q statistic, its degrees of freedom and chi-square p-value."""

    statistic: float
    df: int
    p_value: float


class PairwiseResult(NamedTuple):
    """One pair of `pairwise_mcnemar`: models ``i`` and ``j``, raw and Holm p-values."""

    i: int
    j: int
    b: int
    c: int
    p_value: float
    p_holm: float
    reject: bool


class Agreement(NamedTuple):
    """Agreement of a judge with a reference: kappa, sensitivity, specificity and the counts."""

    kappa: float
    sensitivity: float
    specificity: float
    observed_agreement: float
    tp: int
    fp: int
    fn: int
    tn: int


def _check_confidence(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.number)):
        raise EmbedcamValueError(
            f"confidence must be a number in (0, 1), got {confidence!r}; e.g. 0.95"
        )
    if not 0 < confidence < 1:
        raise EmbedcamValueError(f"confidence must be in (0, 1), got {confidence}; e.g. 0.95")
    return float(confidence)


def _whole(x: Any) -> int | None:
    """``x`` as an int if it is a finite whole number (bools excluded), else ``None``."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return None
    if not math.isfinite(x) or int(x) != x:
        return None
    return int(x)


def _check_counts(k: int, n: int) -> tuple[int, int]:
    ki, ni = _whole(k), _whole(n)
    if ki is None or ni is None or ni <= 0 or not 0 <= ki <= ni:
        raise EmbedcamValueError(
            f"need integer counts with 0 <= k <= n and n > 0, got k={k!r}, n={n!r}"
        )
    return ki, ni


def _as_values(x: Any, name: str) -> np.ndarray:
    """Per-image real values as float64, refusing non-numbers, NaN and infinities."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise EmbedcamValueError(
            f"{name} must hold numbers (bool outcomes or real scores), got dtype {arr.dtype}"
        )
    arr = arr.astype(np.float64)
    if arr.size and not np.isfinite(arr).all():
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        raise EmbedcamValueError(
            f"{name} contains {n_nan} NaN and {n_inf} infinite values; drop the images with "
            "undefined scores first (e.g. keep ~isnan(a) & ~isnan(b))"
        )
    return arr


def _as_outcomes(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ShapeError(f"{name} must be 1-D (one outcome per image), got shape {arr.shape}")
    if arr.dtype != bool:
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise EmbedcamValueError(f"{name} must hold bool or 0/1 outcomes, got other values")
        arr = arr.astype(bool)
    return arr


def _as_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    xa, xb = _as_outcomes(a, "outcomes_a"), _as_outcomes(b, "outcomes_b")
    if xa.shape != xb.shape:
        raise ShapeError(
            f"paired outcomes must have the same length (same images), got {xa.size} and {xb.size}"
        )
    if xa.size == 0:
        raise EmbedcamValueError("paired outcomes are empty; need at least one image")
    return xa, xb


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion ``k / n``.

    Wilson (*Probable inference, the law of succession, and statistical inference*, JASA 1927);
    recommended over the Wald interval by Brown, Cai & DasGupta (Statistical Science 2001).

    Args:
        k: Successes.
        n: Trials, ``> 0``.
        confidence: Two-sided confidence level.

    Returns:
        ``Interval(k / n, low, high)``.

    Raises:
        EmbedcamValueError: If the counts or the confidence are invalid.

    Examples:
        >>> est, lo, hi = wilson_interval(65, 185)
        >>> round(lo, 3), round(hi, 3)
        (0.286, 0.423)
    """
    k, n = _check_counts(k, n)
    from scipy import stats as sps  # imported on use: scipy.stats costs 0.4 s

    z = float(sps.norm.ppf(0.5 + _check_confidence(confidence) / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the bounds are exactly 0 at k = 0 and 1 at k = n; set them so rounding cannot move them
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(p, low, high)


def clopper_pearson_interval(k: int, n: int, confidence: float = 0.95) -> Interval:
    """Clopper-Pearson "exact" interval for ``k / n`` from beta quantiles.

    Clopper & Pearson (*The use of confidence or fiducial limits illustrated in the case of the
    binomial*, Biometrika 1934); computed with ``scipy.stats.beta.ppf``.

    Args:
        k: Successes.
        n: Trials, ``> 0``.
        confidence: Two-sided confidence level.

    Returns:
        ``Interval(k / n, low, high)``.

    Raises:
        EmbedcamValueError: If the counts or the confidence are invalid.
    """
    k, n = _check_counts(k, n)
    alpha = 1 - _check_confidence(confidence)
    from scipy import stats as sps  # imported on use: scipy.stats costs 0.4 s

    low = 0.0 if k == 0 else float(sps.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(sps.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return Interval(k / n, low, high)


def paired_counts(outcomes_a: Any, outcomes_b: Any) -> tuple[int, int, int, int]:
    """The 2 x 2 table of paired outcomes.

    Args:
        outcomes_a: ``(n,)`` bool, model A correct per image.
        outcomes_b: ``(n,)`` bool, model B correct on the same images.

    Returns:
        ``(a, b, c, d)``: both correct, only A correct, only B correct, both wrong.

    Raises:
        ShapeError: If the arrays are not 1-D of equal length.
        EmbedcamValueError: If they are empty or hold values other than 0/1.
    """
    xa, xb = _as_pair(outcomes_a, outcomes_b)
    return (
        int((xa & xb).sum()),
        int((xa & ~xb).sum()),
        int((~xa & xb).sum()),
        int((~xa & ~xb).sum()),
    )


def mcnemar_exact(b: int, c: int, *, mid_p: bool = False) -> McNemarResult:
    """Exact (binomial) McNemar test on the discordant counts, two-sided.

    McNemar (*Note on the sampling error of the difference between correlated proportions*,
    Psychometrika 1947), exact conditional form: under H0 ``b ~ Binomial(b + c, 1/2)`` and
    ``p = min(1, 2 P(X <= min(b, c)))``. The mid-p variant
    ``p = 2 [P(X <= min(b, c)) - P(X = min(b, c)) / 2]`` (Fagerland, Lydersen & Laake, *The
    McNemar test for binary matched-pairs data: mid-p and asymptotic are better than exact
    conditional*, BMC Med Res Methodol 2013) is less conservative. Uses ``scipy.stats.binom``;
    the exact form equals ``scipy.stats.binomtest(b, b + c, 0.5).pvalue``.

    Args:
        b: Images only model A got right.
        c: Images only model B got right.
        mid_p: Return the mid-p value.

    Returns:
        ``McNemarResult(b, c, p_value)``; ``p = 1`` when there is no discordant pair.

    Raises:
        EmbedcamValueError: If a count is negative or not an integer.

    Examples:
        >>> round(mcnemar_exact(10, 2).p_value, 4)
        0.0386
    """
    bi, ci = _whole(b), _whole(c)
    if bi is None or ci is None or bi < 0 or ci < 0:
        raise EmbedcamValueError(f"b and c must be non-negative integers, got b={b!r}, c={c!r}")
    b, c = bi, ci
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 1.0)
    m = min(b, c)
    from scipy import stats as sps  # imported on use: scipy.stats costs 0.4 s

    tail = float(sps.binom.cdf(m, n, 0.5))
    if mid_p:
        tail -= 0.5 * float(sps.binom.pmf(m, n, 0.5))
    return McNemarResult(b, c, min(1.0, 2 * tail))


def mcnemar(outcomes_a: Any, outcomes_b: Any, *, mid_p: bool = False) -> McNemarResult:
    """Exact McNemar test of two models' paired outcomes (see `mcnemar_exact`).

    Args:
        outcomes_a: ``(n,)`` bool, model A correct per image.
        outcomes_b: ``(n,)`` bool, model B correct on the same images.
        mid_p: Return the mid-p value.

    Returns:
        ``McNemarResult(b, c, p_value)``.

    Raises:
        ShapeError: If the arrays are not 1-D of equal length.
        EmbedcamValueError: If they are empty or hold values other than 0/1.
    """
    _, b, c, _ = paired_counts(outcomes_a, outcomes_b)
    return mcnemar_exact(b, c, mid_p=mid_p)


def newcombe_paired_interval(
    outcomes_a: Any, outcomes_b: Any, confidence: float = 0.95
) -> Interval:
    """Newcombe's hybrid score interval for the difference of paired proportions ``p_A - p_B``.

    Method 10 of Newcombe (*Improved confidence intervals for the difference between binomial
    proportions based on paired data*, Statistics in Medicine 1998): Wilson intervals
    ``[l_i, u_i]`` for both rates, combined with the correlation ``phi = C / sqrt(efgh)`` of the
    2 x 2 table (``e, f, g, h`` its margins; ``phi = 0`` when a margin is empty), where Newcombe's
    ``C`` is ``ad - bc - n/2`` when ``ad - bc > n/2``, ``ad - bc`` when it is negative and 0
    otherwise (also the worked form in Altman et al., *Statistics with Confidence*, 2000):
    ``low = D - sqrt((p_A - l_A)^2 - 2 phi (p_A - l_A)(u_B - p_B) + (u_B - p_B)^2)`` and
    ``high = D + sqrt((u_A - p_A)^2 - 2 phi (u_A - p_A)(p_B - l_B) + (p_B - l_B)^2)``.

    Args:
        outcomes_a: ``(n,)`` bool, model A correct per image.
        outcomes_b: ``(n,)`` bool, model B correct on the same images.
        confidence: Two-sided confidence level.

    Returns:
        ``Interval(p_A - p_B, low, high)``.

    Raises:
        ShapeError: If the arrays are not 1-D of equal length.
        EmbedcamValueError: If they are empty or hold values other than 0/1, or the confidence
            is invalid.

    Examples:
        >>> import numpy as np
        >>> a = np.array([1] * 48 + [0] * 2, dtype=bool)  # 36 both, 12 only A, 2 only B
        >>> b = np.array([1] * 36 + [0] * 12 + [1] * 2, dtype=bool)
        >>> est, lo, hi = newcombe_paired_interval(a, b)
        >>> round(est, 2), round(lo, 4), round(hi, 4)
        (0.2, 0.0569, 0.3404)
    """
    a, b, c, d = paired_counts(outcomes_a, outcomes_b)
    n = a + b + c + d
    pa, la, ua = wilson_interval(a + b, n, confidence)
    pb, lb, ub = wilson_interval(a + c, n, confidence)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    # Newcombe's continuity-corrected numerator: ad - bc shrunk by n/2 towards 0 when positive
    cross = a * d - b * c
    if cross > n / 2:
        numerator = cross - n / 2
    elif cross < 0:
        numerator = float(cross)
    else:
        numerator = 0.0
    phi = 0.0 if margins == 0 else numerator / math.sqrt(margins)
    diff = pa - pb
    low = diff - math.sqrt(
        max(0.0, (pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2)
    )
    high = diff + math.sqrt(
        max(0.0, (ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2)
    )
    return Interval(diff, max(-1.0, low), min(1.0, high))


def paired_bootstrap_interval(
    values_a: Any,
    values_b: Any,
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval for ``mean(a) - mean(b)``, resampling images in pairs.

    Efron & Tibshirani (*An Introduction to the Bootstrap*, 1993). Each resample draws ``n``
    images with replacement and keeps both models' values of an image together, so the
    correlation between models is preserved. Vectorised over resamples (in chunks, so memory
    stays bounded) with a seeded ``numpy.random.Generator``; 10,000 resamples of a few hundred
    images take milliseconds.

    Args:
        values_a: ``(n,)`` per-image values of model A (bool outcomes or real scores).
        values_b: ``(n,)`` values of model B on the same images.
        n_resamples: Number of bootstrap resamples, ``>= 100``.
        confidence: Two-sided confidence level.
        seed: Seed of the random generator (same seed, same interval).

    Returns:
        ``Interval(mean(a) - mean(b), low, high)``.

    Raises:
        ShapeError: If the arrays are not 1-D of equal length.
        EmbedcamValueError: If they are empty, hold non-numbers, NaN or infinite values (the
            message counts them), ``n_resamples`` is not an integer ``>= 100`` or the confidence
            is invalid.
    """
    xa, xb = _as_values(values_a, "values_a"), _as_values(values_b, "values_b")
    if xa.ndim != 1 or xb.shape != xa.shape:
        raise ShapeError(
            f"paired values must be 1-D of equal length, got shapes {xa.shape} and {xb.shape}"
        )
    if xa.size == 0:
        raise EmbedcamValueError("paired values are empty; need at least one image")
    with np.errstate(over="ignore", invalid="ignore"):
        diff = xa - xb
    if not np.isfinite(diff).all():
        raise EmbedcamValueError(
            "values_a - values_b overflows float64 for some images; rescale the scores"
        )
    n_int = _whole(n_resamples)
    if n_int is None or n_int < 100:
        raise EmbedcamValueError(f"n_resamples must be an integer >= 100, got {n_resamples!r}")
    n_resamples = n_int
    alpha = 1 - _check_confidence(confidence)
    rng = np.random.default_rng(seed)
    n = diff.size
    means = np.empty(int(n_resamples))
    chunk = max(1, (1 << 22) // n)
    for lo in range(0, int(n_resamples), chunk):
        hi = min(int(n_resamples), lo + chunk)
        idx = rng.integers(0, n, size=(hi - lo, n))
        means[lo:hi] = diff[idx].mean(1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(float(diff.mean()), float(low), float(high))


def _as_matrix(outcomes: Any) -> np.ndarray:
    if hasattr(outcomes, "detach"):
        outcomes = outcomes.detach().cpu().numpy()
    arr = np.asarray(outcomes)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ShapeError(
            f"outcomes must be (n_images, n_models) with at least 2 models, got {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise EmbedcamValueError("outcomes are empty; need at least one image")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise EmbedcamValueError("outcomes must hold bool or 0/1 values")
        arr = arr.astype(bool)
    return arr


def cochran_q(outcomes: Any) -> CochranQResult:
    """Cochran's Q test that ``k`` models have the same success rate on the same images.

    Cochran (*The comparison of percentages in matched samples*, Biometrika 1950):
    ``Q = (k - 1) (k sum_j C_j^2 - T^2) / (k T - sum_i R_i^2)`` with column totals ``C_j``, row
    totals ``R_i`` and grand total ``T``; ``Q ~ chi2(k - 1)`` under H0 (p from
    ``scipy.stats.chi2``). With two models it equals the uncorrected asymptotic McNemar statistic.

    Args:
        outcomes: ``(n_images, k_models)`` bool.

    Returns:
        ``CochranQResult(Q, k - 1, p)``; ``Q = 0, p = 1`` when every image has the same outcome for
        all models (no discordance).

    Raises:
        ShapeError: If ``outcomes`` is not 2-D with at least two columns.
        EmbedcamValueError: If it is empty or holds values other than 0/1.

    Examples:
        >>> import numpy as np
        >>> x = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0], [1, 0, 0]])
        >>> round(cochran_q(x).statistic, 4)  # 2 * (3 * 21 - 7**2) / (3 * 7 - 15)
        4.6667
    """
    x = _as_matrix(outcomes).astype(np.int64)
    k = x.shape[1]
    # Python ints: the squared column totals of billions of images would overflow int64
    col = [int(v) for v in x.sum(0)]
    row = x.sum(1)
    total = int(row.sum())
    denom = k * total - int((row**2).sum())
    if denom == 0:
        return CochranQResult(0.0, k - 1, 1.0)
    q = (k - 1) * (k * sum(v * v for v in col) - total**2) / denom
    from scipy import stats as sps  # imported on use: scipy.stats costs 0.4 s

    return CochranQResult(float(q), k - 1, float(sps.chi2.sf(q, k - 1)))


def holm_correction(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control).

    Holm (*A simple sequentially rejective multiple test procedure*, Scand. J. Statist. 1979):
    sort ``p_(1) <= ... <= p_(m)``, adjust ``p_(i) -> max_{j <= i} min(1, (m - j + 1) p_(j))``.

    Args:
        p_values: Raw p-values in ``[0, 1]``.

    Returns:
        Adjusted p-values in the input order (an empty list for no p-values).

    Raises:
        ShapeError: If ``p_values`` is not 1-D.
        EmbedcamValueError: If a p-value is not a number, outside ``[0, 1]`` or NaN.

    Examples:
        >>> tuple(round(p, 6) for p in holm_correction([0.01, 0.04, 0.03]))
        (0.03, 0.06, 0.06)
    """
    try:
        p = np.asarray(p_values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise EmbedcamValueError(f"p-values must be numbers in [0, 1], got {p_values!r}") from err
    if p.ndim != 1:
        raise ShapeError(f"p-values must be a 1-D sequence, got shape {p.shape}")
    if p.size and (np.isnan(p).any() or (p < 0).any() or (p > 1).any()):
        raise EmbedcamValueError(f"p-values must be in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return [float(v) for v in out]


def pairwise_mcnemar(
    outcomes: Any, *, mid_p: bool = False, alpha: float = 0.05
) -> list[PairwiseResult]:
    """Exact McNemar for every pair of models, with Holm's correction over the pairs.

    The usual follow-up to a significant [`cochran_q`][embedcam.stats.cochran_q].

    Args:
        outcomes: ``(n_images, k_models)`` bool.
        mid_p: Use mid-p McNemar values.
        alpha: Family-wise error rate for the ``reject`` flags.

    Returns:
        One [`PairwiseResult`][embedcam.stats.PairwiseResult] per pair ``i < j``, in order
        ``(0, 1), (0, 2), ...``.

    Raises:
        ShapeError: If ``outcomes`` is not 2-D with at least two columns.
        EmbedcamValueError: If it is empty, holds values other than 0/1, or ``alpha`` is not in
            ``(0, 1)``.
    """
    if not 0 < alpha < 1:
        raise EmbedcamValueError(f"alpha must be in (0, 1), got {alpha}")
    x = _as_matrix(outcomes)
    k = x.shape[1]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    tests = [mcnemar(x[:, i], x[:, j], mid_p=mid_p) for i, j in pairs]
    adjusted = holm_correction([t.p_value for t in tests])
    return [
        PairwiseResult(i, j, t.b, t.c, t.p_value, p_adj, p_adj <= alpha)
        for (i, j), t, p_adj in zip(pairs, tests, adjusted)
    ]


def cohen_kappa(judge: Any, reference: Any) -> Agreement:
    """Cohen's kappa, sensitivity and specificity of a binary judge against a reference.

    Cohen (*A coefficient of agreement for nominal scales*, Educ. Psychol. Meas. 1960):
    ``kappa = (p_o - p_e) / (1 - p_e)``. Sensitivity ``TP / (TP + FN)`` and specificity
    ``TN / (TN + FP)`` treat ``reference`` as the truth.

    Args:
        judge: ``(n,)`` bool, the automated verdicts.
        reference: ``(n,)`` bool, the reference verdicts (e.g. human or ground truth).

    Returns:
        An [`Agreement`][embedcam.stats.Agreement]; kappa is NaN when ``p_e = 1`` (both raters
        constant and equal), sensitivity / specificity NaN when the reference has no positive /
        negative.

    Raises:
        ShapeError: If the arrays are not 1-D of equal length.
        EmbedcamValueError: If they are empty or hold values other than 0/1.

    Examples:
        >>> round(cohen_kappa([1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]).kappa, 4)
        0.3333
    """
    j, r = _as_pair(judge, reference)
    tp = int((j & r).sum())
    fp = int((j & ~r).sum())
    fn = int((~j & r).sum())
    tn = int((~j & ~r).sum())
    n = tp + fp + fn + tn
    p_o = (tp + tn) / n
    p_e = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
    kappa = float("nan") if p_e == 1 else (p_o - p_e) / (1 - p_e)
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    return Agreement(kappa, sens, spec, p_o, tp, fp, fn, tn)


def kappa_bootstrap_interval(
    judge: Any,
    reference: Any,
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of Cohen's kappa, resampling the judged items.

    Each resample draws ``n`` (judge, reference) pairs with replacement and recomputes kappa from
    its 2 x 2 counts (vectorised over resamples, in chunks). Resamples whose kappa is undefined
    (both raters constant and equal) are left out; the interval is NaN when all are.

    Args:
        judge: ``(n,)`` bool, the automated verdicts.
        reference: ``(n,)`` bool, the reference verdicts.
        n_resamples: Number of resamples, ``>= 100``.
        confidence: Two-sided confidence level.
        seed: Seed of the generator (same seed, same interval).

    Returns:
        ``Interval(kappa, low, high)``.

    Raises:
        ShapeError: If the arrays are not 1-D of equal length.
        EmbedcamValueError: If they are empty, not 0/1, or ``n_resamples`` / ``confidence`` is
            invalid.

    Examples:
        >>> ci = kappa_bootstrap_interval([1, 1, 0, 0, 1, 0] * 20, [1, 0, 0, 0, 1, 1] * 20)
        >>> round(ci.estimate, 4), ci.low < ci.estimate < ci.high
        (0.3333, True)
    """
    j, r = _as_pair(judge, reference)
    n_int = _whole(n_resamples)
    if n_int is None or n_int < 100:
        raise EmbedcamValueError(f"n_resamples must be an integer >= 100, got {n_resamples!r}")
    alpha = 1 - _check_confidence(confidence)
    estimate = cohen_kappa(j, r).kappa
    rng = np.random.default_rng(seed)
    n = j.size
    code = j.astype(np.int64) * 2 + r.astype(np.int64)  # 0 tn, 1 fn, 2 fp, 3 tp
    kappas = np.empty(n_int)
    chunk = max(1, (1 << 22) // n)
    for lo in range(0, n_int, chunk):
        hi = min(n_int, lo + chunk)
        idx = rng.integers(0, n, size=(hi - lo, n))
        c = code[idx]
        tn, fn, fp, tp = ((c == v).sum(1).astype(np.float64) for v in range(4))
        p_o = (tp + tn) / n
        p_e = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
        with np.errstate(divide="ignore", invalid="ignore"):
            kappas[lo:hi] = np.where(p_e < 1, (p_o - p_e) / (1 - p_e), np.nan)
    ok = kappas[~np.isnan(kappas)]
    if ok.size == 0:
        return Interval(float(estimate), float("nan"), float("nan"))
    low, high = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return Interval(float(estimate), float(low), float(high))
