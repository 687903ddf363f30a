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
from .evaluate import ModelAudit, recipe_records
from .models import CONTROL

#: Score thresholds tried per criterion when calibrating the judge.
THRESHOLDS: dict[str, tuple[float, ...]] = {
    "paper": (0.3, 0.4, 0.5, 0.6, 0.7),
    "energy": (0.3, 0.4, 0.5, 0.6, 0.7),
    "pointing": (1.0,),
    "region_iou": (0.2, 0.3, 0.4, 0.5),
    "wsol": (0.3, 0.5),
}
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
                "pointing_game": r.pointing_game,
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


def calibration(audits: list[ModelAudit], data: Data, cfg: SkuConfig) -> dict[str, Any] | None:
    """Choose the judge on the calibration (valid) split against an interventional truth.

    Ground truth per (image, model): the model's evidence is the object when its kNN prediction
    survives moving the object onto a foreign background (Mixed-Rand) *and* does not survive
    removing the object (Only-BG-B). Every (recipe, method, criterion, threshold) is judged from
    the calibration audits' stored scores
    ([`embedcam.Judge.from_scores`][embedcam.pipeline.Judge.from_scores]) and scored with Cohen's
    kappa; the best is then reported on the test split.
    """
    if any(a.calibration is None for a in audits):
        return None

    def truth(split: str) -> np.ndarray:
        return np.concatenate(
            [interventional_truth(a.test if split == "test" else a.calibration) for a in audits]
        )

    def judged(split: str, recipe: str, criterion: str, thr: float) -> np.ndarray:
        j = judge_of(criterion, thr)
        return np.concatenate(
            [j.from_scores(recipe_records(a.records(split), recipe)).numpy() for a in audits]
        )

    gt_valid, gt_test = truth("calibration"), truth("test")
    cands = []
    for spec in cfg.recipes:
        for method in cfg.methods:
            for criterion, thresholds in THRESHOLDS.items():
                for thr in thresholds:
                    agr = ec.stats.cohen_kappa(
                        judged("calibration", spec.label(method), criterion, thr), gt_valid
                    )
                    cands.append(
                        {
                            "recipe": spec.name,
                            "method": method,
                            "criterion": criterion,
                            "threshold": thr,
                            "kappa": _f(agr.kappa),
                            "sensitivity": _f(agr.sensitivity),
                            "specificity": _f(agr.specificity),
                        }
                    )
    # The paper's step 4 made measurable: the prediction survives darkening outside the
    # evidence ("reclassify"), alone and combined with each map-vs-box criterion ("and").
    if all(a.evidence for a in audits):

        def kept(split: str, recipe: str) -> np.ndarray:
            return np.concatenate([a.evidence[split][recipe] for a in audits])

        for spec in cfg.recipes:
            for method in cfg.methods:
                name = spec.label(method)
                combos: list[tuple[str, float | None]] = [("reclassify", None)]
                combos += [(c, t) for c, ts in THRESHOLDS.items() for t in ts]
                for criterion, thr in combos:
                    verdict = kept("calibration", name)
                    label = "reclassify"
                    if thr is not None:
                        verdict = verdict & judged("calibration", name, criterion, thr)
                        label = f"reclassify+{criterion}"
                    agr = ec.stats.cohen_kappa(verdict, gt_valid)
                    cands.append(
                        {
                            "recipe": spec.name,
                            "method": method,
                            "criterion": label,
                            "threshold": thr if thr is not None else 1.0,
                            "kappa": _f(agr.kappa),
                            "sensitivity": _f(agr.sensitivity),
                            "specificity": _f(agr.specificity),
                        }
                    )
    ranked = sorted(cands, key=lambda c: -1e9 if c["kappa"] is None else c["kappa"], reverse=True)
    best = dict(ranked[0])
    test_verdicts = np.concatenate([verdicts_of(a, best) for a in audits])
    agr = ec.stats.cohen_kappa(test_verdicts, gt_test)
    ci = ec.stats.kappa_bootstrap_interval(
        test_verdicts, gt_test, n_resamples=cfg.bootstrap, seed=cfg.data.seed
    )
    best.update(
        test_kappa=_f(agr.kappa),
        test_kappa_low=_f(ci.low),
        test_kappa_high=_f(ci.high),
        test_sensitivity=_f(agr.sensitivity),
        test_specificity=_f(agr.specificity),
    )
    # The paper-faithful default, for comparison on the same split.
    default = next(
        c
        for c in cands
        if c["recipe"] == cfg.recipes[0].name
        and c["method"] == cfg.methods[0]
        and c["criterion"] == "paper"
        and c["threshold"] == 0.5
    )
    return {
        "ground_truth": "knn prediction survives Mixed-Rand and does not survive Only-BG-B",
        "pairs_valid": int(gt_valid.size),
        "truth_rate_valid": float(gt_valid.mean()),
        "truth_rate_test": float(gt_test.mean()),
        "best_per_criterion": [
            next(c for c in ranked if c["criterion"] == crit)
            for crit in dict.fromkeys(c["criterion"] for c in cands)
        ],
        "paper_default": default,
        "chosen": best,
        "candidates": cands,
    }


def verdicts_of(a: ModelAudit, chosen: dict[str, Any], split: str = "test") -> np.ndarray:
    """One model's per-image verdicts (dataset order) under a calibration candidate."""
    key = f"{chosen['recipe']}/{chosen['method']}"
    criterion = chosen["criterion"]
    if criterion.startswith("reclassify"):
        out = a.evidence[split][key]
        if criterion == "reclassify":
            return out
        base = judge_of(criterion.removeprefix("reclassify+"), chosen["threshold"])
        return out & base.from_scores(recipe_records(a.records(split), key)).numpy()
    judge = judge_of(criterion, chosen["threshold"])
    return judge.from_scores(recipe_records(a.records(split), key)).numpy()


def add_calibrated_column(
    t1: dict[str, Any], audits: list[ModelAudit], cfg: SkuConfig, chosen: dict[str, Any]
) -> None:
    """Table 1's last column again, judged by the judge chosen on the calibration split."""
    t1["calibrated_judge"] = {k: chosen[k] for k in ("recipe", "method", "criterion", "threshold")}
    key = f"{chosen['recipe']}/{chosen['method']}"
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
            # per test image: the kNN prediction survives darkening outside the evidence
            res["evidence_kept"] = {
                a.name: {r: [bool(v) for v in kept] for r, kept in a.evidence["test"].items()}
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
