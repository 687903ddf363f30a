"""Map-vs-box scores and the automated "features correct" judge.

One package, four jobs, one module each: the per-map scores (`embedcam.scoring.scores`), the
all-scores record [`score_maps`][embedcam.scoring.score_maps] (`embedcam.scoring.records`), the
judge [`judge_features`][embedcam.scoring.judge_features] (`embedcam.scoring.judge`), and the
private batched kernels all three share. Import every name from here.

Every score takes CAM ``maps (B, H, W)`` (float) and object ``regions (B, H, W)`` (bool: rasterised
boxes from [`boxes_to_masks`][embedcam.boxes.boxes_to_masks], or a segmentation mask) and returns a
``(B,)`` float tensor. Definitions follow Score-CAM's energy pointing game, Quantus and TorchRay
(see each function); ``A = |B| / N`` is the area fraction of
the region, the chance level of most scores, and is reported beside them.

Negative map values. The scores are defined for ``s >= 0``. Maps from the CAM engine are already
ReLU'd, but raw or signed maps are accepted: with ``negatives="clamp"`` (the default) every score
uses ``max(s, 0)`` (negative evidence is no evidence, as after Grad-CAM's ReLU); with
``negatives="abs"`` it uses ``|s|`` (evidence of either sign, useful for signed maps: on a foreign
background the ReLU removes the background's evidence against the class). The paper-faithful region
``s > 0`` always uses the map as given.

Degenerate cases are results, not errors:

* empty region (``|B| = 0``): every score is NaN (``area_fraction`` is 0);
* no evidence (the transformed map sums to 0, e.g. an all-zero CAM): energy in box, energy lift,
  rank accuracy and pixel AUC are NaN, the pointing game is 0 (never a hit), the evidence region is
  empty (IoU, recall and box IoU 0, precision NaN), and [`score_maps`][embedcam.scoring.score_maps]
  flags it in ``no_evidence``;
* region covering the whole image: pixel AUC is NaN (no negative pixels);
* an empty batch (``B = 0``): every score, [`score_maps`][embedcam.scoring.score_maps] and
  [`judge_features`][embedcam.scoring.judge_features] return zero-length ``(0,)`` tensors (a filter
  that leaves nothing is not an error); maps without pixels (``H W = 0``) score like an empty
  region.

Hostile values. Maps with NaN or infinite values raise
[`EmbedcamValueError`][embedcam.errors.EmbedcamValueError] naming the first bad map and counting the
bad values; finite maps near the float maximum are scored exactly (sums that would overflow are
taken on the map divided by its maximum, which leaves every ratio unchanged).

Pointing tolerance. A single pointing game is strict by default (``tolerance=0``:
[`pointing_game`][embedcam.scoring.pointing_game],
[`judge_features`][embedcam.scoring.judge_features] and [`Judge`][embedcam.pipeline.Judge]); the
record of [`score_maps`][embedcam.scoring.score_maps] holds the strict game and, as
``pointing_game_tolerant``, the TorchRay game at
[`TORCHRAY_TOLERANCE`][embedcam.scoring.TORCHRAY_TOLERANCE] = 15 px.

Quantus 0.6 counts an empty mask or an all-zero map as a pointing hit; embedcam does not.
"""

from __future__ import annotations

from embedcam.scoring.baselines import (
    GAUSSIAN_SIGMA,
    Baselines,
    baseline_scores,
    centred_gaussian_maps,
)
from embedcam.scoring.judge import CRITERIA, Criterion, judge_features
from embedcam.scoring.records import MapScores, score_maps
from embedcam.scoring.scores import (
    TORCHRAY_TOLERANCE,
    Negatives,
    area_fraction,
    box_map_ceiling,
    energy_in_box,
    energy_lift,
    no_evidence,
    pixel_auc,
    pointing_game,
    positive_evidence_share,
    rank_accuracy,
    region_iou,
    region_precision,
    region_recall,
    wsol_box_iou,
)

__all__ = [
    "Negatives",
    "Criterion",
    "MapScores",
    "area_fraction",
    "energy_in_box",
    "energy_lift",
    "pointing_game",
    "rank_accuracy",
    "pixel_auc",
    "region_iou",
    "region_precision",
    "region_recall",
    "wsol_box_iou",
    "positive_evidence_share",
    "no_evidence",
    "box_map_ceiling",
    "baseline_scores",
    "Baselines",
    "centred_gaussian_maps",
    "GAUSSIAN_SIGMA",
    "score_maps",
    "judge_features",
    "CRITERIA",
    "TORCHRAY_TOLERANCE",
]
