"""From the audits to the tables: Table 1, the control row, separation, calibration.

Table 1 on the hard images and the paired tests come from
[`embedcam.compare`][embedcam.audit.compare] over the loss models' audits; what is specific to the
paper stays here: the control row on the same hard images, the shortcut check, which recipe
separates the shortcut-trained models from the control, and the judge calibrated against an
interventional ground truth. Every function returns plain JSON-ready dicts, so results.json holds
every number the report shows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import embedcam as ec
from embedcam.audit import Rate

from .config import SkuConfig
from .data import Data
from .evaluate import EVIDENCE_FIELDS, EVIDENCE_REGIONS, ModelAudit, recipe_records
from .models import CONTROL

#: Score thresholds tried per criterion when calibrating the judge.
THRESHOLDS: dict[str, tuple[float, ...]] = {
    "paper": (0.3, 0.4, 0.5, 0.6, 0.7),
    "energy": (0.3, 0.4, 0.5, 0.6, 0.7),
    "pointing": (1.0,),
    "region_iou": (0.2, 0.3, 0.4, 0.5),
    "wsol": (0.3, 0.5),
}
#: The re-classification tests: the prediction survives keeping only the evidence ("kept"),
#: changes when the evidence is darkened ("lost"), or both ("decisive").
EVIDENCE_TESTS = ("kept", "lost", "decisive")
#: Stored scores the learned judge reads per recipe (besides the evidence tests).
LEARNED_SCORES = (
    "energy_in_box",
    "pointing_game",
    "region_iou",
    "positive_share",
    "wsol_box_iou",
    "no_evidence",
    "area_fraction",
)
#: Probability cuts tried for the learned judge on the calibration split.
LEARNED_CUTS = tuple(round(0.05 * i, 2) for i in range(1, 20))
#: L2 penalties tried for the learned judge (on standardised features, summed loss).
LEARNED_PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0)
#: Folds of the learned judge's cross-validation on the calibration split.
LEARNED_FOLDS = 5
#: ``recipe`` and ``method`` of a judge that reads every recipe.
ALL_RECIPES = "all"
#: The :class:`embedcam.Judge` field that holds each criterion's threshold.
THRESHOLD_FIELD = {
    "paper": "positive_share",
    "energy": "energy",
    "region_iou": "region_iou",
    "wsol": "wsol_box_iou",
}


def _f(x: float | None) -> float | None:
    """JSON-safe float (NaN -> None)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def judge_of(criterion: str, threshold: float) -> ec.Judge:
    """The library judge of one calibration candidate."""
    field = THRESHOLD_FIELD.get(criterion)
    return ec.Judge(criterion=criterion, **({field: threshold} if field else {}))


def _labels(audits: list[ModelAudit]) -> np.ndarray:
    return np.array(audits[0].test.per_image.labels)


def _pred(audit: ec.AuditResult) -> np.ndarray:
    return np.array(audit.per_image.pred)


def hard_images(audits: list[ModelAudit], losses: list[str]) -> list[int]:
    """Test images misclassified by at least one of the loss models (the paper's hard set).

    What [`embedcam.compare`][embedcam.audit.compare] computes; needed here only where it cannot run
    (one loss model, or no boxes to judge features by).
    """
    labels = _labels(audits)
    wrong = np.zeros(len(labels), dtype=bool)
    for a in audits:
        if a.name in losses:
            wrong |= _pred(a.test) != labels
    return np.nonzero(wrong)[0].tolist()


def _rate_fields(rate: Rate, calibrated: bool = False) -> dict[str, Any]:
    """A Table 1 cell as results.json stores it: count, percent and Wilson bounds in percent."""
    names = (
        ("hard_correct_calibrated", "hard_correct_calibrated_pct")
        + ("calibrated_wilson_low", "calibrated_wilson_high")
        if calibrated
        else ("hard_correct", "hard_correct_pct", "wilson_low", "wilson_high")
    )
    pct = [None if x is None else 100.0 * x for x in (rate.rate, rate.low, rate.high)]
    return dict(zip(names, [rate.k, *pct]))


def row_on_hard(audit: ec.AuditResult, hard: list[int], recipe: str) -> dict[str, Any]:
    """A model's Table 1 outcome on given hard images (the control row: not part of the hard
    set's definition, so not one of the compared audits)."""
    labels = np.array(audit.per_image.labels)
    ok = (_pred(audit) == labels)[hard]
    verdict = np.array(audit.per_image.verdict[recipe], dtype=bool)[hard]
    return {
        "class_correct_hard": int(ok.sum()),
        "rate": Rate.of(ok & verdict),
    }


def _with_verdicts(audit: ec.AuditResult, recipe: str, verdicts: list[bool]) -> ec.AuditResult:
    """A copy of an audit whose per-image verdicts for ``recipe`` are replaced."""
    pi = audit.per_image
    return audit.model_copy(
        update={"per_image": pi.model_copy(update={"verdict": {**pi.verdict, recipe: verdicts}})}
    )


def compare_losses(
    audits: list[ModelAudit], cfg: SkuConfig, recipe: str, verdicts: dict[str, list[bool]] | None
) -> ec.Comparison | None:
    """`compare` over the loss models (``verdicts`` replaces the audits')."""
    losses = [a for a in audits if a.name in cfg.losses]
    if len(losses) < 2:
        return None
    results = [
        a.test if verdicts is None else _with_verdicts(a.test, recipe, verdicts[a.name])
        for a in losses
    ]
    return ec.compare(results, recipe=recipe)


def table1(
    audits: list[ModelAudit], data: Data, cfg: SkuConfig
) -> tuple[dict[str, Any], ec.Comparison | None]:
    """The paper's Table 1 with Wilson intervals, for the first recipe and first method."""
    key = cfg.table1_recipe
    comp = compare_losses(audits, cfg, key, None) if data.has_boxes else None
    hard = comp.hard_images if comp is not None else hard_images(audits, cfg.losses)
    by_name = {r.name: r for r in comp.rows} if comp is not None else {}
    labels = _labels(audits)
    rows = []
    for a in audits:
        ok = (_pred(a.test) == labels)[hard]
        row: dict[str, Any] = {
            "model": a.name,
            "macro_f1": a.test.macro_f1,
            "errors": a.test.errors,
            "class_correct_hard": int(ok.sum()),
        }
        if data.has_boxes:
            if a.name in by_name:
                r = by_name[a.name]
                row["class_correct_hard"], rate = r.class_correct_hard, r.hard_correct
            else:
                own = row_on_hard(a.test, hard, key)
                row["class_correct_hard"], rate = own["class_correct_hard"], own["rate"]
            feat = np.array(a.test.per_image.verdict[key], dtype=bool)[hard]
            row["features_correct_hard"] = int(feat.sum())
            row.update(_rate_fields(rate))
        rows.append(row)
    spec = cfg.recipes[0]
    t1 = {
        "n_hard": len(hard),
        "n_test": int(labels.size),
        "recipe": spec.name,
        "method": cfg.methods[0],
        "criterion": cfg.judge_criterion,
        "rows": rows,
    }
    return t1, comp


def paired_stats(comp: ec.Comparison | None, cfg: SkuConfig) -> dict[str, Any]:
    """Cochran's Q over the loss models, pairwise exact McNemar (Holm), Newcombe intervals."""
    if comp is None or not comp.hard_images:
        names = [r.name for r in comp.rows] if comp is not None else list(cfg.losses)
        return {"models": names, "cochran_q": None, "pairwise": []}
    return {
        "models": [r.name for r in comp.rows],
        "cochran_q": None
        if comp.cochran_q_p is None
        else {
            "statistic": comp.cochran_q,
            "df": comp.cochran_q_df,
            "p_value": comp.cochran_q_p,
        },
        "pairwise": [
            {
                "a": p.a,
                "b": p.b,
                "only_a": p.only_a,
                "only_b": p.only_b,
                "p_value": p.p_value,
                "p_holm": p.p_holm,
                "reject_at_0.05": p.p_holm is not None and p.p_holm <= 0.05,
                "diff": p.diff,
                "newcombe_low": p.low,
                "newcombe_high": p.high,
            }
            for p in comp.pairwise
        ],
    }


def classification_paired(audits: list[ModelAudit], cfg: SkuConfig) -> list[dict[str, Any]]:
    """Do the losses differ in accuracy? Exact McNemar on every test image, Holm over the pairs.

    The paper compares macro-F1 and error counts without a test; the same test images make the
    comparison paired. ``diff`` is accuracy A - accuracy B with Newcombe's paired 95% interval.
    """
    losses = [a for a in audits if a.name in cfg.losses]
    if len(losses) < 2:
        return []
    labels = _labels(audits)
    correct = np.stack([_pred(a.test) == labels for a in losses], axis=1)
    out = []
    for r in ec.stats.pairwise_mcnemar(correct):
        a, b = correct[:, r.i], correct[:, r.j]
        ci = ec.stats.newcombe_paired_interval(a, b)
        out.append(
            {
                "a": losses[r.i].name,
                "b": losses[r.j].name,
                "only_a": int(r.b),
                "only_b": int(r.c),
                "p_value": float(r.p_value),
                "p_holm": float(r.p_holm),
                "reject_at_0.05": bool(r.reject),
                "diff": float(a.mean() - b.mean()),
                "newcombe_low": _f(ci.low),
                "newcombe_high": _f(ci.high),
            }
        )
    return out


def bg_gaps(a: ModelAudit) -> list[dict[str, Any]]:
    """BG-gap (and accuracy after each intervention) on every split that was intervened on.

    The test audit intervenes on the test split (and on the valid split when that is not
    audited for calibration); the calibration audit on the valid split. ``region`` says whether
    exact masks or box rectangles moved the object.
    """
    out = []
    for audit, names in ((a.test, {"queries": "test", "valid": "valid"}),
                         (a.calibration, {"queries": "valid"})):  # fmt: skip
        if audit is None:
            continue
        for iv in audit.interventions:
            out.append(
                {
                    "split": names.get(iv.split, iv.split),
                    "region": iv.region,
                    "images": iv.images,
                    "accuracy": iv.accuracy,
                    "bg_gap": _f(iv.bg_gap),
                    **{f"acc_{k}": v for k, v in iv.accuracy_after.items()},
                }
            )
    return out


def _queries_interventions(audit: ec.AuditResult) -> Any:
    return next((iv for iv in audit.interventions if iv.split == "queries"), None)


def model_summary(a: ModelAudit) -> dict[str, Any]:
    """Classification, convergence and background reliance of one model."""
    c = a.test.classification
    h = a.test.health
    rec: dict[str, Any] = {
        "macro_f1": c.macro_f1,
        "errors": c.errors,
        "accuracy": c.accuracy,
        "valid_accuracy": a.valid_accuracy,
        "converged": a.converged,
        "epochs": a.epochs,
        "best_epoch": a.best_epoch,
        "stop_reason": a.stop_reason,
        "train_seconds": a.train_seconds,
        "run_seconds": a.run_seconds,
        "final_loss": _f(a.final_loss),
        "active_fraction": _f(a.active_fraction),
        "effective_rank": h.effective_rank,
        "mean_pairwise_cosine": h.mean_pairwise_cosine,
        "collapsed": h.collapsed,
        "bg_gap": bg_gaps(a),
    }
    iv = _queries_interventions(a.test)
    if iv is not None and "mixed_rand" in iv.accuracy_after:
        # The mean explained score of a centroid recipe is the cosine to the true centroid.
        cos = next((r.mean_score for r in a.test.recipes if r.recipe.target == "centroid"), None)
        rec["interventions"] = {
            **{f"acc_{k}": v for k, v in iv.accuracy_after.items()},
            "bg_gap": iv.bg_gap,
            "shift_drop": c.accuracy - iv.accuracy_after["mixed_rand"],
            "cos_true_mean": cos,
            "cos_drop_mixed_rand": iv.cos_drop["mixed_rand"],
            "cos_drop_only_bg": iv.cos_drop["only_bg"],
        }
    return rec


def shortcut_check(models: dict[str, dict[str, Any]], losses: list[str]) -> dict[str, Any] | None:
    """Did the planted shortcut take hold (loss models lose accuracy off their home background,
    the control does not), and did every model converge?"""
    if CONTROL not in models or "interventions" not in models[CONTROL]:
        return None
    drops = {n: m["interventions"]["shift_drop"] for n, m in models.items()}
    control_drop = drops[CONTROL]
    took = all(drops[n] >= control_drop + 0.1 for n in losses if n in drops)
    clean = control_drop < 0.1
    # The absolute accuracy target is the control's: a clean model that has not learnt the
    # object cue is no reference. Loss models stop on their own validation plateau.
    unconverged = [CONTROL] if not models[CONTROL]["converged"] else []
    problems = []
    if not took:
        problems.append(
            "the shortcut did not take hold in every loss model (accuracy drop on foreign "
            "backgrounds is not >= 0.1 above the control's)"
        )
    if not clean:
        problems.append(f"the control loses {control_drop:.2f} accuracy on foreign backgrounds")
    if unconverged:
        problems.append(
            f"the control did not converge (valid accuracy {models[CONTROL]['valid_accuracy']} "
            "below train.converged_accuracy): it is no clean reference yet"
        )
    return {
        "shift_drop": drops,
        "took_hold": took,
        "control_clean": clean,
        "unconverged": unconverged,
        "ok": took and clean and not unconverged,
        "problems": problems,
    }


def _cohen_d(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    pooled = math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    return None if pooled == 0 else float((np.mean(a) - np.mean(b)) / pooled)


def separation(
    audits: list[ModelAudit], data: Data, cfg: SkuConfig, seed: int
) -> list[dict[str, Any]]:
    """Which recipe separates the shortcut-trained models from the control?

    Energy in box (of |map| for signed recipes) on the test images that show their home
    background (off-home, the ReLU hides the foreign background: FINDINGS section 4), read from
    the audits' records. Per loss model: the paired mean difference to the control with a
    paired bootstrap interval, and Cohen's d. A recipe separates when every interval lies below
    zero.
    """
    by_name = {a.name: a for a in audits}
    if CONTROL not in by_name:
        return []
    test = data.splits["test"]
    sel = test.home.nonzero().flatten().numpy() if test.home is not None else np.arange(len(test))
    out = []
    for spec in cfg.recipes:
        for method in cfg.methods:
            key = spec.label(method)
            ctrl_rec = recipe_records(by_name[CONTROL].records(), key).iloc[sel]
            ctrl = ctrl_rec["energy_in_box"].to_numpy(dtype=np.float64)
            rows = []
            for name in cfg.losses:
                if name not in by_name:
                    continue
                vals = recipe_records(by_name[name].records(), key)["energy_in_box"]
                vals = vals.to_numpy(dtype=np.float64)[sel]
                ok = ~(np.isnan(vals) | np.isnan(ctrl))
                ci = ec.stats.paired_bootstrap_interval(
                    vals[ok], ctrl[ok], n_resamples=cfg.bootstrap, seed=seed
                )
                rows.append(
                    {
                        "model": name,
                        "mean": float(np.mean(vals[ok])),
                        "diff": _f(ci.estimate),
                        "low": _f(ci.low),
                        "high": _f(ci.high),
                        "cohen_d": _cohen_d(vals[ok], ctrl[ok]),
                    }
                )
            out.append(
                {
                    "recipe": spec.name,
                    "target": spec.target,
                    "layer": spec.layer,
                    "signed": spec.signed,
                    "method": method,
                    "grid": [int(ctrl_rec["grid_h"].iloc[0]), int(ctrl_rec["grid_w"].iloc[0])],
                    "images": int(sel.size),
                    "control_mean": float(np.nanmean(ctrl)),
                    "chance_mean": float(np.nanmean(ctrl_rec["area_fraction"])),
                    "ceiling_mean": float(np.nanmean(ctrl_rec["ceiling"])),
                    "rows": rows,
                    "separates": bool(rows)
                    and all(r["high"] is not None and r["high"] < 0 for r in rows),
                }
            )
    return out


def recipe_effects(audits: list[ModelAudit], cfg: SkuConfig, seed: int) -> list[dict[str, Any]]:
    """Every recipe against the baselines, for every model: no control needed.

    Per test image with a box: energy in box minus the box-area fraction (what a uniform map
    scores), with a paired bootstrap interval, and the mean ceiling (the best a box-shaped map
    reaches on the recipe's CAM grid). ``headroom`` is the share of the way from chance to the
    ceiling the recipe covers: 0 is chance, 1 is the best any map on that grid can do.
    """
    out = []
    for spec in cfg.recipes:
        for method in cfg.methods:
            key = spec.label(method)
            rows = []
            grid: list[int] = []
            for a in audits:
                df = recipe_records(a.records(), key)
                e = df["energy_in_box"].to_numpy(dtype=np.float64)
                chance = df["area_fraction"].to_numpy(dtype=np.float64)
                ceil = df["ceiling"].to_numpy(dtype=np.float64)
                ok = ~(np.isnan(e) | np.isnan(chance) | np.isnan(ceil))
                if not ok.any():
                    continue
                grid = [int(df["grid_h"].iloc[0]), int(df["grid_w"].iloc[0])]
                ci = ec.stats.paired_bootstrap_interval(
                    e[ok], chance[ok], n_resamples=cfg.bootstrap, seed=seed
                )
                span = float(np.mean(ceil[ok]) - np.mean(chance[ok]))
                rows.append(
                    {
                        "model": a.name,
                        "images": int(ok.sum()),
                        "energy_in_box": float(np.mean(e[ok])),
                        "chance": float(np.mean(chance[ok])),
                        "ceiling": float(np.mean(ceil[ok])),
                        "lift": _f(ci.estimate),
                        "low": _f(ci.low),
                        "high": _f(ci.high),
                        "headroom": _f(float(ci.estimate) / span) if span > 0 else None,
                        "above_chance": ci.low is not None and ci.low > 0,
                    }
                )
            if rows:
                out.append(
                    {
                        "recipe": spec.name,
                        "method": method,
                        "target": spec.target,
                        "layer": spec.layer,
                        "signed": spec.signed,
                        "grid": grid,
                        "rows": rows,
                    }
                )
    return out


def skipped_steps(
    audits: list[ModelAudit], data: Data, cfg: SkuConfig, res: dict[str, Any]
) -> list[dict[str, str]]:
    """One line per analysis step that could not run on this data, and why."""
    out: list[dict[str, str]] = []
    if not data.has_boxes:
        out.append(
            {
                "step": "feature judging (Table 1's last column), its paired tests, recipe "
                "effects, interventions, BG-gap and judge calibration",
                "reason": "the export has no boxes or masks (a classification layout); export "
                "it as COCO, YOLO or VOC, or build composites with exact masks",
            }
        )
    if len([a for a in audits if a.name in cfg.losses]) < 2:
        out.append({"step": "paired tests", "reason": "they need at least two loss models"})
    if CONTROL not in {a.name for a in audits}:
        out.append(
            {
                "step": "separation from the control and the shortcut check",
                "reason": "only the synthetic shelf trains a control without the background "
                "shortcut; the recipes are compared with the box-area chance and the grid "
                "ceiling instead (recipe effects)",
            }
        )
    if data.has_boxes and res.get("calibration") is None:
        valid = data.splits.get("valid")
        why = (
            "there is no validation split"
            if valid is None
            else "the validation split has no exact object masks (mask files or COCO "
            "segmentation): the interventional truth needs them, a moved box rectangle carries "
            "its background along"
        )
        out.append({"step": "judge calibration (and Table 1's calibrated column)", "reason": why})
    seen: dict[tuple[str, str], list[str]] = {}
    for a in audits:
        for audit in (a.test, a.calibration):
            for sk in audit.skipped if audit is not None else []:
                calibrated = a.calibration is not None
                if calibrated and sk.step == "validation accuracy":
                    continue  # the calibration audit ran on the validation split itself
                if not data.has_boxes and "box scores" in sk.step:
                    continue  # said above, for the whole run
                seen.setdefault((sk.step, sk.reason), []).append(a.name)
    for (step, reason), names in seen.items():
        models = sorted(set(names))
        who = "" if len(models) == len(audits) else f" (models: {', '.join(models)})"
        out.append({"step": f"audit: {step}{who}", "reason": reason})
    return out


def all_images(audits: list[ModelAudit]) -> dict[str, Any]:
    """Beyond the paper: every test image, per recipe x method and model (the audits' means)."""
    out: dict[str, Any] = {}
    for a in audits:
        for r in a.test.recipes:
            out.setdefault(r.recipe.name, {})[a.name] = {
                "energy_in_box": r.energy_in_box,
                "chance": r.chance,
                "gaussian": r.gaussian,
                "ceiling": r.ceiling,
                "pointing_game": r.pointing_game,
                "gaussian_pointing": r.gaussian_pointing,
                "positive_share": r.positive_share,
                "judge_rate": r.judged.rate if r.judged is not None else None,
                "empty_rate": r.empty_rate,
            }
    return out


def interventional_truth(audit: ec.AuditResult) -> np.ndarray:
    """Per image: the evidence is the object (prediction survives Mixed-Rand, not Only-BG-B)."""
    pi = audit.per_image
    labels = np.array(pi.labels)
    rand = np.array(pi.intervened_pred["mixed_rand"]) == labels
    bg = np.array(pi.intervened_pred["only_bg"]) == labels
    return rand & ~bg


def _map_verdict(
    a: ModelAudit, split: str, key: str, criterion: str, threshold: float
) -> np.ndarray:
    """A map-vs-box criterion on one model's stored scores (dataset order)."""
    return judge_of(criterion, threshold).from_scores(recipe_records(a.records(split), key)).numpy()


def _evidence_verdict(a: ModelAudit, split: str, key: str, region: str, test: str) -> np.ndarray:
    """A re-classification test: ``kept`` (sufficient), ``lost`` (necessary) or both."""
    ev = a.evidence[split][key][region]
    if test == "decisive":
        return np.asarray(ev["kept"] & ev["lost"], dtype=bool)
    return np.asarray(ev[test], dtype=bool)


def judge_features(a: ModelAudit, split: str, keys: list[str]) -> tuple[np.ndarray, list[str]]:
    """What the learned judge reads per image: the stored map scores and the evidence tests.

    Per recipe key: `LEARNED_SCORES` from the records (NaN -> 0; ``no_evidence`` says where) and,
    where the evidence was measured, every `EVIDENCE_FIELDS` value of every evidence region.
    """
    cols: list[np.ndarray] = []
    names: list[str] = []
    for key in keys:
        df = recipe_records(a.records(split), key)
        for c in LEARNED_SCORES:
            cols.append(np.nan_to_num(df[c].to_numpy(dtype=np.float64), nan=0.0))
            names.append(f"{key}:{c}")
        for region, fields in (a.evidence.get(split, {}).get(key) or {}).items():
            for f in EVIDENCE_FIELDS:
                cols.append(np.asarray(fields[f], dtype=np.float64))
                names.append(f"{key}:{f}@{region}")
    return np.stack(cols, axis=1), names


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> dict[str, Any]:
    """L2-penalised logistic regression by Newton's method, on standardised features.

    Returns a JSON-ready model: ``mean``, ``scale`` (the standardisation), ``intercept`` and
    ``coef`` (per standardised feature); the intercept is not penalised.
    """
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale == 0] = 1.0
    z = np.c_[np.ones(len(x)), (x - mean) / scale]
    penalty = np.full(z.shape[1], l2)
    penalty[0] = 0.0
    w = np.zeros(z.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return {
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "intercept": float(w[0]),
        "coef": w[1:].tolist(),
    }


def cross_validate_logistic(
    x: np.ndarray, y: np.ndarray, folds: np.ndarray
) -> tuple[float, float, float | None]:
    """The penalty and probability cut of the best out-of-fold kappa, and that kappa.

    Every fold is predicted by a model fitted on the other folds; each (penalty, cut) in
    `LEARNED_PENALTIES` x `LEARNED_CUTS` is scored by Cohen's kappa of the pooled out-of-fold
    verdicts.
    """
    best: tuple[float, float, float | None] = (LEARNED_PENALTIES[0], 0.5, None)
    for l2 in LEARNED_PENALTIES:
        prob = np.empty(len(y))
        for f in np.unique(folds):
            held = folds == f
            model = fit_logistic(x[~held], y[~held].astype(np.float64), l2=l2)
            prob[held] = predict_logistic(model, x[held])
        for cut in LEARNED_CUTS:
            kappa = _f(ec.stats.cohen_kappa(prob >= cut, y).kappa)
            if kappa is not None and (best[2] is None or kappa > best[2]):
                best = (l2, cut, kappa)
    return best


def predict_logistic(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Probabilities of `fit_logistic`'s model."""
    z = (x - np.asarray(model["mean"])) / np.asarray(model["scale"])
    return 1.0 / (1.0 + np.exp(-(model["intercept"] + z @ np.asarray(model["coef"]))))


def verdicts_of(a: ModelAudit, spec: dict[str, Any], split: str = "test") -> np.ndarray:
    """One model's per-image verdicts (dataset order) under a calibration candidate."""
    learned = spec.get("learned")
    if learned is not None:
        x, _ = judge_features(a, split, learned["keys"])
        return predict_logistic(learned, x) >= spec["threshold"]
    key = f"{spec['recipe']}/{spec['method']}"
    verdict: np.ndarray | None = None
    if spec.get("evidence") is not None:
        verdict = _evidence_verdict(a, split, key, **spec["evidence"])
    if spec.get("map") is not None:
        m = _map_verdict(a, split, key, **spec["map"])
        verdict = m if verdict is None else verdict & m
    assert verdict is not None
    return verdict


def _table_key(spec: dict[str, Any], cfg: SkuConfig) -> str:
    """The recipe whose Table 1 verdicts a judge replaces (a judge over all recipes: Table 1's)."""
    if spec["recipe"] == ALL_RECIPES:
        return cfg.table1_recipe
    return f"{spec['recipe']}/{spec['method']}"


def calibration(audits: list[ModelAudit], data: Data, cfg: SkuConfig) -> dict[str, Any] | None:
    """Choose the judge on the calibration (valid) split against an interventional truth.

    Ground truth per (image, model): the model's evidence is the object when its kNN prediction
    survives moving the object onto a foreign background (Mixed-Rand) *and* does not survive
    removing the object (Only-BG-B). Candidates, per recipe and method:

    * every map-vs-box criterion and threshold, judged from the calibration audits' stored
      scores ([`embedcam.Judge.from_scores`][embedcam.pipeline.Judge.from_scores]);
    * the paper's step 4 made measurable (where measured): the prediction survives keeping only
      the evidence (``kept``), changes when the evidence is darkened (``lost``), or both
      (``decisive``), per evidence region, alone and combined ("and") with every map criterion;
    * a learned judge: L2-penalised logistic regression over all of those scores, per recipe
      and over every recipe at once; the penalty and the probability cut are chosen by 5-fold
      cross-validation on the calibration split (folds of images), then it is refitted on the
      whole split. It is ranked by its cross-validated kappa, not the in-sample one.

    Every candidate is scored with Cohen's kappa on the calibration split; the best of each
    family is then reported on the test split with a bootstrap interval, and the best overall
    is the chosen judge. The truth's own reliability (Mixed-Rand redrawn with other donors) is
    reported beside it: no judge can agree with the truth better than the truth agrees with
    itself.
    """
    if any(a.calibration is None for a in audits):
        return None

    def truth(split: str) -> np.ndarray:
        return np.concatenate(
            [interventional_truth(a.test if split == "test" else a.calibration) for a in audits]
        )

    def pooled(spec: dict[str, Any], split: str) -> np.ndarray:
        return np.concatenate([verdicts_of(a, spec, split) for a in audits])

    gt_valid, gt_test = truth("calibration"), truth("test")
    cands: list[dict[str, Any]] = []

    def add(spec: dict[str, Any], verdict: np.ndarray) -> None:
        agr = ec.stats.cohen_kappa(verdict, gt_valid)
        spec.update(
            kappa=_f(agr.kappa), sensitivity=_f(agr.sensitivity), specificity=_f(agr.specificity)
        )
        cands.append(spec)

    with_evidence = all(a.evidence for a in audits)
    keys = [(spec.name, method) for spec in cfg.recipes for method in cfg.methods]
    map_combos = [(c, t) for c, ts in THRESHOLDS.items() for t in ts]
    for recipe, method in keys:
        base = {"recipe": recipe, "method": method}
        key = f"{recipe}/{method}"
        maps = {
            (c, t): np.concatenate([_map_verdict(a, "calibration", key, c, t) for a in audits])
            for c, t in map_combos
        }
        for (c, t), verdict in maps.items():
            add({**base, "family": c, "criterion": c, "threshold": t,
                 "map": {"criterion": c, "threshold": t}}, verdict)  # fmt: skip
        if not with_evidence:
            continue
        for region in EVIDENCE_REGIONS:
            for test in EVIDENCE_TESTS:
                ev = {"region": region, "test": test}
                e = np.concatenate([_evidence_verdict(a, "calibration", key, **ev) for a in audits])
                add({**base, "family": test, "criterion": f"{test}@{region}", "threshold": 1.0,
                     "evidence": ev}, e)  # fmt: skip
                for (c, t), verdict in maps.items():
                    add({**base, "family": f"{test}+map", "criterion": f"{test}@{region}+{c}",
                         "threshold": t, "evidence": ev,
                         "map": {"criterion": c, "threshold": t}}, e & verdict)  # fmt: skip
    groups = [[f"{r}/{m}"] for r, m in keys] + [[f"{r}/{m}" for r, m in keys]]
    # images, not (image, model) pairs, are split into folds: an image seen by every model
    # stays on one side
    folds = np.concatenate([np.arange(len(interventional_truth(a.calibration))) for a in audits])
    folds = folds % LEARNED_FOLDS
    for group in groups:
        x = np.concatenate([judge_features(a, "calibration", group)[0] for a in audits])
        l2, cut, cv_kappa = cross_validate_logistic(x, gt_valid, folds)
        model = fit_logistic(x, gt_valid.astype(np.float64), l2=l2)
        model["keys"] = group
        model["features"] = judge_features(audits[0], "calibration", group)[1]
        model["l2"] = l2
        every = len(group) > 1
        recipe, method = (ALL_RECIPES, ALL_RECIPES) if every else group[0].split("/", 1)
        spec = {"recipe": recipe, "method": method,
                "family": "learned (every recipe)" if every else "learned",
                "criterion": "learned", "threshold": cut, "learned": model}  # fmt: skip
        add(spec, predict_logistic(model, x) >= cut)
        # ranked by its cross-validated kappa: the in-sample one flatters a fitted judge
        spec["kappa_in_sample"] = spec["kappa"]
        spec["kappa"] = cv_kappa

    def kappa_key(c: dict[str, Any]) -> float:
        return -1e9 if c["kappa"] is None else c["kappa"]

    def on_test(spec: dict[str, Any]) -> dict[str, Any]:
        out = dict(spec)
        verdict = pooled(spec, "test")
        agr = ec.stats.cohen_kappa(verdict, gt_test)
        ci = ec.stats.kappa_bootstrap_interval(
            verdict, gt_test, n_resamples=cfg.bootstrap, seed=cfg.data.seed
        )
        out.update(
            test_kappa=_f(agr.kappa),
            test_kappa_low=_f(ci.low),
            test_kappa_high=_f(ci.high),
            test_sensitivity=_f(agr.sensitivity),
            test_specificity=_f(agr.specificity),
        )
        return out

    ranked = sorted(cands, key=kappa_key, reverse=True)
    families = list(dict.fromkeys(c["family"] for c in cands))
    best_per = [on_test(next(c for c in ranked if c["family"] == fam)) for fam in families]
    best = max(best_per, key=kappa_key)
    # The paper-faithful default, for comparison on the same split.
    default = on_test(
        next(
            c
            for c in cands
            if c["recipe"] == cfg.recipes[0].name
            and c["method"] == cfg.methods[0]
            and c["criterion"] == "paper"
            and c["threshold"] == 0.5
        )
    )
    out: dict[str, Any] = {
        "ground_truth": "knn prediction survives Mixed-Rand and does not survive Only-BG-B",
        "pairs_valid": int(gt_valid.size),
        "pairs_test": int(gt_test.size),
        "truth_rate_valid": float(gt_valid.mean()),
        "truth_rate_test": float(gt_test.mean()),
        "best_per_criterion": best_per,
        "paper_default": default,
        "chosen": best,
        "candidates": [
            {k: v for k, v in c.items() if k not in ("learned", "map", "evidence")} for c in cands
        ],
    }
    if all(a.retest for a in audits):
        for split, gt, tag in (("calibration", gt_valid, "valid"), ("test", gt_test, "test")):
            again = np.concatenate([retest_truth(a, split) for a in audits], axis=1)
            out[f"truth_retest_kappa_{tag}"] = _f(
                float(np.nanmean([_nan(ec.stats.cohen_kappa(r, gt).kappa) for r in again]))
            )
            # the best a judge can do that knows each image's truth apart from the draw of the
            # background: the majority of the redrawn truths, scored against the audit's own
            out[f"truth_ceiling_kappa_{tag}"] = _f(
                ec.stats.cohen_kappa(again.mean(0) > 0.5, gt).kappa
            )
    return out


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def retest_truth(a: ModelAudit, split: str) -> np.ndarray:
    """``(RETESTS, N)``: the interventional truth again, Mixed-Rand's backgrounds redrawn."""
    audit = a.test if split == "test" else a.calibration
    assert audit is not None
    pi = audit.per_image
    labels = np.array(pi.labels)
    bg = np.array(pi.intervened_pred["only_bg"]) == labels
    return (a.retest[split] == labels[None]) & ~bg[None]


def add_calibrated_column(
    t1: dict[str, Any], audits: list[ModelAudit], cfg: SkuConfig, chosen: dict[str, Any]
) -> None:
    """Table 1's last column again, judged by the judge chosen on the calibration split."""
    fields = ("recipe", "method", "family", "criterion", "threshold", "map", "evidence", "learned")
    t1["calibrated_judge"] = {k: chosen.get(k) for k in fields}
    key = _table_key(chosen, cfg)
    verdicts = {a.name: [bool(v) for v in verdicts_of(a, chosen)] for a in audits}
    comp = compare_losses(audits, cfg, key, verdicts)
    hard = comp.hard_images if comp is not None else hard_images(audits, cfg.losses)
    by_name = {r.name: r.hard_correct for r in comp.rows} if comp is not None else {}
    for row, a in zip(t1["rows"], audits):
        rate = by_name.get(a.name)
        if rate is None:
            rate = row_on_hard(_with_verdicts(a.test, key, verdicts[a.name]), hard, key)["rate"]
        row.update(_rate_fields(rate, calibrated=True))


def per_image(audits: list[ModelAudit], cfg: SkuConfig) -> dict[str, Any]:
    """Per-image test predictions and Table 1 verdicts (for checks and re-analysis)."""
    key = cfg.table1_recipe
    out: dict[str, Any] = {"labels": audits[0].test.per_image.labels, "models": {}}
    for a in audits:
        rec: dict[str, Any] = {"pred": a.test.per_image.pred}
        verdict = a.test.per_image.verdict.get(key)
        if verdict is not None and all(v is not None for v in verdict):
            rec["features_correct"] = verdict
        out["models"][a.name] = rec
    return out


def seed_result(audits: list[ModelAudit], data: Data, cfg: SkuConfig, seed: int) -> dict[str, Any]:
    """Every table of one seed."""
    models = {a.name: model_summary(a) for a in audits}
    t1, comp = table1(audits, data, cfg)
    hard = comp.hard_images if comp is not None else hard_images(audits, cfg.losses)
    res: dict[str, Any] = {
        "seed": seed,
        "models": models,
        "hard_images": hard,
        "table1": t1,
        "shortcut_check": shortcut_check(models, cfg.losses),
        "per_image": per_image(audits, cfg),
        "classification_paired": classification_paired(audits, cfg),
        "audits": {
            a.name: {
                "test": f"audits/{a.name}-seed{seed}",
                "calibration": f"audits/{a.name}-seed{seed}-calibration"
                if a.calibration is not None
                else None,
            }
            for a in audits
        },
    }
    if data.has_boxes:
        res["paired"] = paired_stats(comp, cfg)
        res["separation"] = separation(audits, data, cfg, seed)
        res["all_images"] = all_images(audits)
        res["recipe_effects"] = recipe_effects(audits, cfg, seed)
        res["calibration"] = calibration(audits, data, cfg)
        if all(a.evidence for a in audits):
            # per test image, recipe and evidence region: the re-classification tests
            res["evidence"] = {
                a.name: {
                    r: {
                        region: {f: np.asarray(v).tolist() for f, v in fields.items()}
                        for region, fields in regions.items()
                    }
                    for r, regions in a.evidence["test"].items()
                }
                for a in audits
            }
        if res["calibration"] is not None:
            add_calibrated_column(res["table1"], audits, cfg, res["calibration"]["chosen"])
    res["skipped"] = skipped_steps(audits, data, cfg, res)
    return res


def _scalars(obj: Any, prefix: str = "") -> dict[str, float]:
    """Flatten the scalar numbers of a seed result (skipping per-image arrays and lists)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("per_image", "hard_images", "candidates"):
                continue
            out.update(_scalars(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list) and obj and isinstance(obj[0], dict):
        for item in obj:
            ids = [str(item[k]) for k in ("model", "recipe", "method", "split") if k in item]
            if "criterion" in item:  # the best setting of a criterion may change with the seed
                ids = [str(item["criterion"])]
            if "a" in item and "b" in item:
                ids = [f"{item['a']}-{item['b']}"]
            out.update(_scalars(item, f"{prefix}[{'/'.join(ids)}]"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def across_seeds(seeds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, min and max of every scalar across seeds."""
    flat = [_scalars({k: v for k, v in s.items() if k != "seed"}) for s in seeds]
    keys = sorted(set().union(*flat))
    out = {}
    for key in keys:
        vals = np.array([f[key] for f in flat if key in f], dtype=float)
        if len(vals) == 0:
            continue
        out[key] = {
            "n": int(len(vals)),
            "mean": float(vals.mean()),
            "sd": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
            "min": float(vals.min()),
            "max": float(vals.max()),
        }
    return out
