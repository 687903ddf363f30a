"""From per-image measurements to the tables: Table 1, paired statistics, separation, calibration.

Every function takes the :class:`~skubench.evaluate.ModelEval` records of one seed and returns
plain JSON-ready dicts, so results.json holds every number the report shows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

import embedcam as ec

from .config import SkuConfig
from .data import Data
from .evaluate import ModelEval
from .models import CONTROL

#: Score thresholds tried per criterion when calibrating the judge.
THRESHOLDS: dict[str, tuple[float, ...]] = {
    "paper": (0.3, 0.4, 0.5, 0.6, 0.7),
    "energy": (0.3, 0.4, 0.5, 0.6, 0.7),
    "pointing": (1.0,),
    "region_iou": (0.2, 0.3, 0.4, 0.5),
    "wsol": (0.3, 0.5),
}
#: Which stored score each criterion thresholds.
CRITERION_SCORE = {
    "paper": "positive_share",
    "energy": "energy_in_box",
    "pointing": "pointing_game",
    "region_iou": "region_iou",
    "wsol": "wsol_box_iou",
}


def _f(x: float) -> float | None:
    """JSON-safe float (NaN -> None)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def hard_images(evals: list[ModelEval], labels: Tensor, losses: list[str]) -> Tensor:
    """Test images misclassified by at least one of the loss models (the paper's hard set)."""
    wrong = torch.zeros_like(labels, dtype=torch.bool)
    for ev in evals:
        if ev.name in losses:
            wrong |= ev.splits["test"].pred != labels
    return wrong.nonzero().flatten()


def verdict(cs: Any, criterion: str, threshold: float) -> Tensor:
    """Judge verdict from stored scores: score >= threshold, never with no evidence (NaN = no)."""
    s = cs.scores[CRITERION_SCORE[criterion]]
    return (s >= threshold) & ~cs.no_evidence & ~torch.isnan(s)


def table1(evals: list[ModelEval], data: Data, cfg: SkuConfig, hard: Tensor) -> dict[str, Any]:
    """The paper's Table 1 with Wilson intervals, for the first (paper) recipe and first method."""
    labels = data.splits["test"].labels
    recipe, method = cfg.recipes[0].name, cfg.methods[0]
    rows = []
    for ev in evals:
        t = ev.splits["test"]
        class_ok = (t.pred == labels)[hard]
        row: dict[str, Any] = {
            "model": ev.name,
            "macro_f1": ev.macro_f1,
            "errors": ev.errors,
            "class_correct_hard": int(class_ok.sum()),
        }
        if (recipe, method) in t.cams:
            feat = t.cams[recipe, method].verdict[hard]
            both = class_ok & feat
            k, n = int(both.sum()), int(hard.numel())
            ci = ec.stats.wilson_interval(k, n) if n else None
            row.update(
                features_correct_hard=int(feat.sum()),
                hard_correct=k,
                hard_correct_pct=100.0 * k / n if n else None,
                wilson_low=_f(100 * ci.low) if ci else None,
                wilson_high=_f(100 * ci.high) if ci else None,
            )
        rows.append(row)
    return {
        "n_hard": int(hard.numel()),
        "n_test": int(labels.numel()),
        "recipe": recipe,
        "method": method,
        "criterion": cfg.judge_criterion,
        "rows": rows,
    }


def outcomes_on_hard(
    evals: list[ModelEval], data: Data, cfg: SkuConfig, hard: Tensor
) -> dict[str, np.ndarray]:
    """Per model, the (n_hard,) bool "class and features correct" outcome."""
    labels = data.splits["test"].labels
    key = (cfg.recipes[0].name, cfg.methods[0])
    out = {}
    for ev in evals:
        t = ev.splits["test"]
        if key in t.cams:
            out[ev.name] = ((t.pred == labels) & t.cams[key].verdict)[hard].numpy()
    return out


def paired_stats(outcomes: dict[str, np.ndarray], losses: list[str]) -> dict[str, Any]:
    """Cochran's Q over the loss models, pairwise exact McNemar (Holm), Newcombe intervals."""
    names = [n for n in losses if n in outcomes]
    if len(names) < 2 or len(outcomes[names[0]]) == 0:
        return {"models": names, "cochran_q": None, "pairwise": []}
    mat = np.stack([outcomes[n] for n in names], axis=1)
    q = ec.stats.cochran_q(mat) if len(names) >= 3 else None
    pairs = ec.stats.pairwise_mcnemar(mat)
    rows = []
    for pr in pairs:
        a, b = names[pr.i], names[pr.j]
        ci = ec.stats.newcombe_paired_interval(outcomes[a], outcomes[b])
        rows.append(
            {
                "a": a,
                "b": b,
                "only_a": pr.b,
                "only_b": pr.c,
                "p_value": _f(pr.p_value),
                "p_holm": _f(pr.p_holm),
                "reject_at_0.05": bool(pr.reject),
                "diff": _f(ci.estimate),
                "newcombe_low": _f(ci.low),
                "newcombe_high": _f(ci.high),
            }
        )
    return {
        "models": names,
        "cochran_q": None
        if q is None
        else {
            "statistic": _f(q.statistic),
            "df": q.df,
            "p_value": _f(q.p_value),
        },
        "pairwise": rows,
    }


def model_summary(ev: ModelEval, data: Data) -> dict[str, Any]:
    """Classification, convergence and background reliance of one model."""
    test = ev.splits["test"]
    labels = data.splits["test"].labels
    rec: dict[str, Any] = {
        "macro_f1": ev.macro_f1,
        "errors": ev.errors,
        "accuracy": test.accuracy,
        "valid_accuracy": ev.splits["valid"].accuracy if "valid" in ev.splits else None,
        "converged": ev.converged,
        "train_seconds": ev.train_seconds,
        "final_loss": _f(ev.final_loss),
        "active_fraction": _f(ev.active_fraction),
    }
    if test.interventions:
        acc = {
            k: float((v["pred"] == labels).float().mean()) for k, v in test.interventions.items()
        }
        rec["interventions"] = {
            **{f"acc_{k}": v for k, v in acc.items()},
            "bg_gap": float(ec.interventions.bg_gap(acc["mixed_same"], acc["mixed_rand"])),
            "shift_drop": test.accuracy - acc["mixed_rand"],
            "cos_true_mean": float(test.cos_true.mean()),
            "cos_drop_mixed_rand": float(
                (test.cos_true - test.interventions["mixed_rand"]["cos_true"]).mean()
            ),
            "cos_drop_only_bg": float(
                (test.cos_true - test.interventions["only_bg"]["cos_true"]).mean()
            ),
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
    unconverged = [n for n, m in models.items() if not m["converged"]]
    problems = []
    if not took:
        problems.append(
            "the shortcut did not take hold in every loss model (accuracy drop on foreign "
            "backgrounds is not >= 0.1 above the control's)"
        )
    if not clean:
        problems.append(f"the control loses {control_drop:.2f} accuracy on foreign backgrounds")
    if unconverged:
        problems.append(f"not converged (valid accuracy below threshold): {unconverged}")
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
    evals: list[ModelEval], data: Data, cfg: SkuConfig, seed: int
) -> list[dict[str, Any]]:
    """Which recipe separates the shortcut-trained models from the control?

    Energy in box (of |map| for signed recipes) on the test images that show their home
    background (off-home, the ReLU hides the foreign background: FINDINGS section 4). Per loss
    model: the paired mean difference to the control with a paired bootstrap interval, and
    Cohen's d. A recipe separates when every interval lies below zero.
    """
    by_name = {ev.name: ev for ev in evals}
    if CONTROL not in by_name:
        return []
    test = data.splits["test"]
    sel = test.home.nonzero().flatten() if test.home is not None else torch.arange(len(test))
    out = []
    for recipe in cfg.recipes:
        for method in cfg.methods:
            key = (recipe.name, method)
            ctrl_cs = by_name[CONTROL].splits["test"].cams.get(key)
            if ctrl_cs is None:
                continue
            ctrl = ctrl_cs.scores["energy_in_box"][sel].numpy()
            ceiling = ec.scoring.box_map_ceiling(test.regions[sel], grid=ctrl_cs.grid)
            rows = []
            for name in cfg.losses:
                if name not in by_name:
                    continue
                vals = by_name[name].splits["test"].cams[key].scores["energy_in_box"][sel].numpy()
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
                    "recipe": recipe.name,
                    "target": recipe.target,
                    "layer": recipe.layer,
                    "signed": recipe.signed,
                    "method": method,
                    "grid": list(ctrl_cs.grid),
                    "images": int(sel.numel()),
                    "control_mean": float(np.nanmean(ctrl)),
                    "chance_mean": float(test.regions[sel].float().mean()),
                    "ceiling_mean": float(torch.nanmean(ceiling)),
                    "rows": rows,
                    "separates": bool(rows)
                    and all(r["high"] is not None and r["high"] < 0 for r in rows),
                }
            )
    return out


def all_images(evals: list[ModelEval], cfg: SkuConfig) -> dict[str, Any]:
    """Beyond the paper: every test image, per recipe x method and model."""
    out: dict[str, Any] = {}
    for recipe in cfg.recipes:
        for method in cfg.methods:
            key = f"{recipe.name}/{method}"
            out[key] = {}
            for ev in evals:
                cs = ev.splits["test"].cams.get((recipe.name, method))
                if cs is None:
                    continue
                out[key][ev.name] = {
                    "energy_in_box": _f(float(torch.nanmean(cs.scores["energy_in_box"]))),
                    "pointing_game": _f(float(torch.nanmean(cs.scores["pointing_game"]))),
                    "positive_share": _f(float(torch.nanmean(cs.scores["positive_share"]))),
                    "judge_rate": float(cs.verdict.float().mean()),
                    "empty_rate": float(cs.empty.float().mean()),
                }
    return out


def calibration(evals: list[ModelEval], data: Data, cfg: SkuConfig) -> dict[str, Any] | None:
    """Choose the judge on the calibration (valid) split against an interventional truth.

    Ground truth per (image, model): the model's evidence is the object when its kNN prediction
    survives moving the object onto a foreign background (Mixed-Rand) *and* does not survive
    removing the object (Only-BG-B). Every (recipe, method, criterion, threshold) is scored with
    Cohen's kappa on the calibration split; the best is then reported on the test split.
    """
    if not data.synthetic or "valid" not in data.splits:
        return None

    def truth(split: str) -> Tensor:
        labels = data.splits[split].labels
        parts = []
        for ev in evals:
            iv = ev.splits[split].interventions
            parts.append((iv["mixed_rand"]["pred"] == labels) & (iv["only_bg"]["pred"] != labels))
        return torch.cat(parts)

    def judged(split: str, recipe: str, method: str, criterion: str, thr: float) -> Tensor:
        return torch.cat(
            [verdict(ev.splits[split].cams[recipe, method], criterion, thr) for ev in evals]
        )

    gt_valid, gt_test = truth("valid"), truth("test")
    cands = []
    for recipe in cfg.recipes:
        for method in cfg.methods:
            for criterion, thresholds in THRESHOLDS.items():
                for thr in thresholds:
                    agr = ec.stats.cohen_kappa(
                        judged("valid", recipe.name, method, criterion, thr).numpy(),
                        gt_valid.numpy(),
                    )
                    cands.append(
                        {
                            "recipe": recipe.name,
                            "method": method,
                            "criterion": criterion,
                            "threshold": thr,
                            "kappa": _f(agr.kappa),
                            "sensitivity": _f(agr.sensitivity),
                            "specificity": _f(agr.specificity),
                        }
                    )
    ranked = sorted(cands, key=lambda c: -1e9 if c["kappa"] is None else c["kappa"], reverse=True)
    best = dict(ranked[0])
    agr = ec.stats.cohen_kappa(
        judged(
            "test", best["recipe"], best["method"], best["criterion"], best["threshold"]
        ).numpy(),
        gt_test.numpy(),
    )
    best.update(
        test_kappa=_f(agr.kappa),
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
        "pairs_valid": int(gt_valid.numel()),
        "truth_rate_valid": float(gt_valid.float().mean()),
        "truth_rate_test": float(gt_test.float().mean()),
        "best_per_criterion": [
            next(c for c in ranked if c["criterion"] == crit) for crit in THRESHOLDS
        ],
        "paper_default": default,
        "chosen": best,
        "candidates": cands,
    }


def per_image(evals: list[ModelEval], data: Data, cfg: SkuConfig) -> dict[str, Any]:
    """Per-image test predictions and Table 1 verdicts (for checks and re-analysis)."""
    key = (cfg.recipes[0].name, cfg.methods[0])
    out: dict[str, Any] = {"labels": data.splits["test"].labels.tolist(), "models": {}}
    for ev in evals:
        t = ev.splits["test"]
        rec: dict[str, Any] = {"pred": t.pred.tolist()}
        if key in t.cams:
            rec["features_correct"] = t.cams[key].verdict.tolist()
        out["models"][ev.name] = rec
    return out


def seed_result(evals: list[ModelEval], data: Data, cfg: SkuConfig, seed: int) -> dict[str, Any]:
    """Every table of one seed."""
    labels = data.splits["test"].labels
    hard = hard_images(evals, labels, cfg.losses)
    models = {ev.name: model_summary(ev, data) for ev in evals}
    res: dict[str, Any] = {
        "seed": seed,
        "models": models,
        "hard_images": hard.tolist(),
        "table1": table1(evals, data, cfg, hard),
        "shortcut_check": shortcut_check(models, cfg.losses),
        "per_image": per_image(evals, data, cfg),
    }
    if data.has_boxes:
        res["paired"] = paired_stats(outcomes_on_hard(evals, data, cfg, hard), cfg.losses)
        res["separation"] = separation(evals, data, cfg, seed)
        res["all_images"] = all_images(evals, cfg)
        res["calibration"] = calibration(evals, data, cfg)
        if res["calibration"] is not None:
            add_calibrated_column(res["table1"], evals, labels, hard, res["calibration"]["chosen"])
    return res


def add_calibrated_column(
    t1: dict[str, Any], evals: list[ModelEval], labels: Tensor, hard: Tensor, chosen: dict[str, Any]
) -> None:
    """Table 1's last column again, judged by the judge chosen on the calibration split."""
    t1["calibrated_judge"] = {k: chosen[k] for k in ("recipe", "method", "criterion", "threshold")}
    for row, ev in zip(t1["rows"], evals):
        t = ev.splits["test"]
        feat = verdict(
            t.cams[chosen["recipe"], chosen["method"]], chosen["criterion"], chosen["threshold"]
        )
        both = ((t.pred == labels) & feat)[hard]
        k, n = int(both.sum()), int(hard.numel())
        ci = ec.stats.wilson_interval(k, n) if n else None
        row.update(
            hard_correct_calibrated=k,
            hard_correct_calibrated_pct=100.0 * k / n if n else None,
            calibrated_wilson_low=_f(100 * ci.low) if ci else None,
            calibrated_wilson_high=_f(100 * ci.high) if ci else None,
        )


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
            ids = [str(item[k]) for k in ("model", "recipe", "method") if k in item]
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
