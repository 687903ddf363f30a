"""Batched kernels shared by the public scores, the all-scores record and the judge.

Private to `embedcam.scoring`. Every kernel works on checked tensors: maps ``(B, H, W)`` float
(already transformed where a kernel says ``s``) or their flattened ``(B, N)`` rows, and regions
``(B, H, W)`` / ``(B, N)`` bool. Each score is computed by exactly one kernel, so
[`score_maps`][embedcam.scoring.score_maps] and the single-score functions give bit-identical
numbers. scipy is imported only by the kernels that label components.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from embedcam import _regions
from embedcam._regions import check_regions, label_batch
from embedcam.boxes import as_boxes, box_iou
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError
from embedcam.masks import RegionPolicy, check_maps, evidence_region, largest_component_box

#: Elements per chunk for the (chunk, offsets) temporaries of the tolerant pointing game.
CHUNK_ELEMENTS = 1 << 22

#: Rows per chunk of the pixel-AUC sort: keeps the sort keys and temporaries in cache.
AUC_CHUNK_ELEMENTS = 1 << 20


def check_pair(maps: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check maps and regions of one ``(B, H, W)`` shape on one device; maps become floating."""
    maps = check_maps(maps)
    regions = check_regions(regions)
    if maps.shape != regions.shape:
        raise ShapeError(
            f"maps {tuple(maps.shape)} and regions {tuple(regions.shape)} must have the same "
            "(B, H, W) shape; rasterise boxes at the map size with boxes_to_masks(boxes, "
            "size=maps.shape[-2:])"
        )
    if maps.device != regions.device:
        raise EmbedcamValueError(
            f"maps are on {maps.device} but regions on {regions.device}; move them to one device"
        )
    return maps, regions


def check_tolerance(tolerance: float) -> None:
    """Raise for a pointing tolerance that is not ``>= 0`` pixels (NaN included)."""
    if not tolerance >= 0:
        raise EmbedcamValueError(f"tolerance must be >= 0 pixels, got {tolerance}")


def transform(maps: torch.Tensor, negatives: str) -> torch.Tensor:
    """The map the scores read: ``max(s, 0)`` (``"clamp"``) or ``|s|`` (``"abs"``)."""
    if negatives == "clamp":
        return maps.clamp(min=0)
    if negatives == "abs":
        return maps.abs()
    raise ConfigurationError(f"negatives must be 'clamp' or 'abs', got {negatives!r}")


def prepare(
    maps: torch.Tensor, regions: torch.Tensor, negatives: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check, transform and flatten: ``s (B, N)`` and ``r (B, N)``."""
    maps, regions = check_pair(maps, regions)
    s = transform(maps, negatives)
    return s.flatten(1), regions.flatten(1)


def nan_like(n: int, device: torch.device) -> torch.Tensor:
    """``(n,)`` float32 NaN."""
    return torch.full((n,), float("nan"), dtype=torch.float32, device=device)


def count(mask: torch.Tensor) -> torch.Tensor:
    """Row counts ``(B,)`` int64 of a ``(B, N)`` bool mask."""
    if mask.device.type == "cpu":
        # ~10x faster than torch's bool sum, which widens every element to int64 first
        return torch.from_numpy(np.count_nonzero(mask.numpy(), axis=1).astype(np.int64))
    return mask.sum(1)


def area(r: torch.Tensor, n_b: torch.Tensor | None = None) -> torch.Tensor:
    """Area fraction ``|B| / N`` ``(B,)`` float32 of flattened regions ``r (B, N)``."""
    n_b = count(r) if n_b is None else n_b
    return n_b.to(torch.float64).div(max(r.shape[1], 1)).to(torch.float32)


def no_evidence(s: torch.Tensor) -> torch.Tensor:
    """Rows of a transformed ``s (B, N)`` (``s >= 0``) that sum to 0: ``(B,)`` bool."""
    return s.sum(1, dtype=torch.float64) == 0


def energy(s: torch.Tensor, r: torch.Tensor, n_b: torch.Tensor | None = None) -> torch.Tensor:
    """Energy in box ``sum_B s / sum s`` ``(B,)`` float32; NaN for empty ``r`` or zero ``s``."""
    # s * r holds the same values as torch.where(r, s, 0) (s >= 0), so the sums are the same
    inside = (s * r.to(s.dtype)).sum(1).to(torch.float64)
    total = s.sum(1).to(torch.float64)
    big = ~torch.isfinite(total)
    if bool(big.any()):
        # finite maps near the dtype's maximum overflow the sum (inf / inf = NaN, x / inf = 0);
        # the energy is scale-free, so those maps are summed again divided by their maximum
        sb = s[big]
        sb = sb / sb.amax(1, keepdim=True)
        inside[big] = (sb * r[big].to(sb.dtype)).sum(1).to(torch.float64)
        total[big] = sb.sum(1).to(torch.float64)
    e = inside / total
    n_b = count(r) if n_b is None else n_b
    e[(n_b == 0) | (total == 0)] = float("nan")
    return e.to(torch.float32)


def pointing(s3: torch.Tensor, regions: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Pointing hit ``(B,)`` float32 of transformed maps ``s3 (B, H, W)`` within ``tolerance``."""
    b, h, w = s3.shape
    s = s3.flatten(1)
    r = regions.flatten(1)
    if b == 0 or h * w == 0:
        return nan_like(b, s3.device)
    idx = s.argmax(1)
    if tolerance == 0:
        hit = r.gather(1, idx[:, None])[:, 0]
    else:
        # the pixel offsets (dy, dx) strictly closer than the tolerance, with the same float32
        # arithmetic as a distance field; only the region under these offsets is read
        dy = torch.arange(-(h - 1), h, dtype=torch.float32, device=s.device)
        dx = torch.arange(-(w - 1), w, dtype=torch.float32, device=s.device)
        near = (dy[:, None] ** 2 + dx[None, :] ** 2) < tolerance**2
        oy, ox = (v.to(torch.int64) for v in torch.nonzero(near, as_tuple=True))
        oy, ox = oy - (h - 1), ox - (w - 1)
        py, px = idx // w, idx % w
        hit = torch.zeros(b, dtype=torch.bool, device=s.device)
        step = max(1, CHUNK_ELEMENTS // max(1, oy.numel()))
        for lo in range(0, b, step):
            hi = min(b, lo + step)
            yy = py[lo:hi, None] + oy[None, :]
            xx = px[lo:hi, None] + ox[None, :]
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            lin = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).clamp(0, h * w - 1)
            hit[lo:hi] = (r[lo:hi].gather(1, lin) & inside).any(1)
    out = hit.to(torch.float32)
    out[s.amax(1) == 0] = 0.0
    out[~r.any(1)] = float("nan")
    return out


def kth_largest(s: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The ``k[i]``-th largest value of each row of ``s (B, N)`` (any value where ``k[i] = 0``)."""
    b, n = s.shape
    if s.device.type != "cpu":
        k_max = int(k.max())
        # a partial top-k is several times cheaper than a full sort when the regions are small
        if 0 < k_max <= n // 2:
            desc = s.topk(k_max, dim=1).values
        else:
            desc = s.sort(dim=1, descending=True).values
        return desc.gather(1, (k - 1).clamp(min=0)[:, None])[:, 0]
    # introselect per row (numpy) is linear time; a batched top-k sorts k_max values per row
    a = s.detach().numpy()
    kth = np.zeros(b, dtype=a.dtype)
    for i, ki in enumerate(k.tolist()):
        if ki > 0:
            kth[i] = np.partition(a[i], n - ki)[n - ki]
    return torch.from_numpy(kth)


def rank(s: torch.Tensor, r: torch.Tensor, n_b: torch.Tensor | None = None) -> torch.Tensor:
    """Rank accuracy ``(B,)`` float32 with expected tie-breaking at the ``|B|``-th value."""
    b, n = s.shape
    if b == 0 or n == 0:
        return nan_like(b, s.device)
    n_b = count(r) if n_b is None else n_b
    kth = kth_largest(s, n_b)[:, None]
    greater = s > kth
    tied = s == kth
    n_greater = count(greater).to(torch.float64)
    in_greater = count(greater & r).to(torch.float64)
    n_tied = count(tied).to(torch.float64)
    in_tied = count(tied & r).to(torch.float64)
    k = n_b.to(torch.float64)
    acc = (in_greater + (k - n_greater) * in_tied / n_tied) / k
    acc[(n_b == 0) | (s.amax(1) == 0)] = float("nan")
    return acc.to(torch.float32)


def auc(s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Pixel ROC-AUC ``(B,)`` float32 (Mann-Whitney with mid-ranks)."""
    b, n = s.shape
    if b == 0 or n == 0:
        return nan_like(b, s.device)
    n_pos = count(r).to(torch.float64)
    n_neg = n - n_pos
    if s.device.type == "cpu":
        num = torch.from_numpy(auc_pairs(s.detach().numpy(), r.numpy()))
    else:
        num = auc_pairs_torch(s, r)
    out = num / (n_pos * n_neg)
    out[(n_pos == 0) | (n_neg == 0) | (s.amax(1) == 0)] = float("nan")
    return out.to(torch.float32)


def auc_pairs(s: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``#(pos > neg) + #(pos == neg) / 2`` over all (positive, negative) pixel pairs, per row.

    One sort per row of an integer key ``2 * bits(s) + r``: non-negative floats order like their
    bit patterns, and on equal values the negatives come first. A positive at sorted position
    ``i`` then has ``i - (positives before it)`` negatives at or below its value, which summed
    gives ``#(pos >= neg)``; the tied pairs ``#(pos == neg)`` come from each group of equal
    values holding both labels. The result is the Mann-Whitney ``U`` with mid-ranks, computed
    exactly in integers.
    """
    b, n = s.shape
    ints, uints = (np.int32, np.uint32) if s.dtype == np.float32 else (np.int64, np.uint64)
    out = np.zeros(b, dtype=np.float64)
    positions = np.arange(n, dtype=np.float64)
    step = max(1, AUC_CHUNK_ELEMENTS // n)
    for lo in range(0, b, step):
        hi = min(b, lo + step)
        # + 0.0 turns -0.0 (sign bit set) into +0.0, so bit order is value order
        v = np.ascontiguousarray(s[lo:hi]) + s.dtype.type(0.0)
        key = (v.view(ints).astype(uints) << uints(1)) | r[lo:hi].astype(uints)
        key.sort(axis=1)
        lab = (key & uints(1)).astype(np.float64)
        n_pos = lab.sum(1)
        ge = lab @ positions - n_pos * (n_pos - 1) / 2
        # a group of equal values holding both labels has exactly one (negative, positive) step
        step_at = (key[:, 1:] == key[:, :-1] + uints(1)) & ((key[:, 1:] & uints(1)) == 1)
        rows, cols = np.nonzero(step_at)
        eq = np.zeros(hi - lo, dtype=np.float64)
        for row in np.unique(rows):
            j = cols[rows == row] + 1
            krow = key[row]
            start = np.searchsorted(krow, krow[j - 1], side="left")
            end = np.searchsorted(krow, krow[j], side="right")
            eq[row] = float(((j - start) * (end - j)).sum())
        out[lo:hi] = ge - eq / 2
    return out


def auc_pairs_torch(s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Torch version of [`auc_pairs`][embedcam.scoring._kernels.auc_pairs] for accelerators."""
    b, n = s.shape
    vals, order = s.sort(dim=1)
    pos = r.gather(1, order)
    idx = torch.arange(n, device=s.device).expand(b, n)
    starts = torch.ones(b, n, dtype=torch.bool, device=s.device)
    starts[:, 1:] = vals[:, 1:] != vals[:, :-1]
    ends = torch.ones(b, n, dtype=torch.bool, device=s.device)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, idx, 0).cummax(1).values
    last = torch.where(ends, idx, n - 1).flip(1).cummin(1).values.flip(1)
    midrank = (first + last).to(torch.float64) / 2 + 1
    n_pos = pos.sum(1).to(torch.float64)
    return (midrank * pos).sum(1) - n_pos * (n_pos + 1) / 2


def evidence(
    maps: torch.Tensor, policy: RegionPolicy, theta: float, percent: float, negatives: str
) -> torch.Tensor:
    """The evidence region ``R (B, H, W)`` of checked maps, after the ``negatives`` transform."""
    return evidence_region(transform(maps, negatives), policy, theta=theta, percent=percent)


def region_counts(
    e: torch.Tensor, r: torch.Tensor, n_b: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``|R and B|``, ``|R|`` and ``|B|`` ``(B,)`` float64 of flattened ``e`` and ``r``."""
    inter = count(e & r).to(torch.float64)
    n_r = count(e).to(torch.float64)
    n_b = (count(r) if n_b is None else n_b).to(torch.float64)
    return inter, n_r, n_b


def iou(inter: torch.Tensor, n_r: torch.Tensor, n_b: torch.Tensor) -> torch.Tensor:
    """Region IoU ``(B,)`` float32 from the region counts ``|R and B|``, ``|R|``, ``|B|``."""
    out = inter / (n_r + n_b - inter)
    out[n_b == 0] = float("nan")
    return out.to(torch.float32)


def precision(inter: torch.Tensor, n_r: torch.Tensor, n_b: torch.Tensor) -> torch.Tensor:
    """Region precision ``(B,)`` float32 from the region counts."""
    out = inter / n_r
    out[(n_b == 0) | (n_r == 0)] = float("nan")
    return out.to(torch.float32)


def recall(inter: torch.Tensor, n_r: torch.Tensor, n_b: torch.Tensor) -> torch.Tensor:
    """Region recall ``(B,)`` float32 from the region counts."""
    out = inter / n_b
    out[n_b == 0] = float("nan")
    return out.to(torch.float32)


def component_boxes(regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes around the 4-connected components of a batch of regions ``(B, H, W)``.

    Returns the image index ``(K,)`` and the box ``(K, 4)`` xyxy float64 of every component.
    """
    from scipy.ndimage import find_objects

    b, h, w = regions.shape
    rows: np.ndarray = np.any(regions, axis=2)
    cols: np.ndarray = np.any(regions, axis=1)
    has: np.ndarray = np.any(rows, axis=1)
    y0, y1 = rows.argmax(1), h - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), w - cols[:, ::-1].argmax(1)
    n_pixels = regions.reshape(b, h * w).sum(1)
    # a region that fills its bounding box (a rasterised box) is a single component
    solid = has & (n_pixels == (y1 - y0) * (x1 - x0))
    img = [np.flatnonzero(solid)]
    boxes = [np.stack([x0, y0, x1, y1], 1)[solid].astype(np.float64)]
    rest = np.flatnonzero(has & ~solid)
    step = max(1, _regions.LABEL_CHUNK_PIXELS // max(1, h * w))
    for lo in range(0, rest.size, step):
        sel = rest[lo : lo + step]
        lab, _ = label_batch(regions[sel], 1)
        for sl in find_objects(lab):
            if sl is not None:
                sb, sy, sx = sl
                img.append(np.array([sel[sb.start]]))
                boxes.append(np.array([[sx.start, sy.start, sx.stop, sy.stop]], np.float64))
    return np.concatenate(img), np.concatenate(boxes).reshape(-1, 4)


def wsol(
    evidence: torch.Tensor, regions: torch.Tensor, gt_boxes: Sequence[torch.Tensor] | None
) -> torch.Tensor:
    """WSOL box IoU ``(B,)`` float32 of evidence regions against the object's boxes."""
    b, h, w = evidence.shape
    out = torch.full((b,), float("nan"), dtype=torch.float64)
    if b == 0 or h * w == 0:  # no image, or images without pixels: every region is empty
        return out.to(torch.float32).to(evidence.device)
    pred = largest_component_box(evidence).to(torch.float64).cpu()
    reg_np = regions.detach().cpu().numpy()
    has_b: np.ndarray = np.any(reg_np.reshape(b, h * w), axis=1)
    if gt_boxes is not None:
        for i in range(b):
            if not has_b[i]:
                continue
            gt = as_boxes(gt_boxes[i], name=f"gt_boxes[{i}]").to(torch.float64).cpu()
            gt = gt.reshape(-1, 4)
            if gt.shape[0] == 0:
                continue
            if torch.isnan(pred[i]).any():
                out[i] = 0.0
                continue
            out[i] = box_iou(pred[i].expand_as(gt), gt).max()
        return out.to(torch.float32).to(evidence.device)
    img_np, gt_np = component_boxes(reg_np)
    img, gt = torch.from_numpy(img_np).to(torch.int64), torch.from_numpy(gt_np)
    ious = box_iou(pred[img], gt)
    # no evidence region: nothing localised, IoU 0 with every box
    ious[torch.isnan(pred[img]).any(1)] = 0.0
    out.scatter_reduce_(0, img, ious, reduce="amax", include_self=False)
    return out.to(torch.float32).to(evidence.device)


def positive_share(
    maps: torch.Tensor, regions: torch.Tensor, n_b: torch.Tensor | None = None
) -> torch.Tensor:
    """Share ``(B,)`` float32 of the ``maps > 0`` region that lies in ``regions``."""
    pos = (maps > 0).flatten(1)
    r = regions.flatten(1)
    n_pos = count(pos).to(torch.float64)
    out = count(pos & r).to(torch.float64) / n_pos
    n_b = count(r) if n_b is None else n_b
    out[(n_pos == 0) | (n_b == 0)] = float("nan")
    return out.to(torch.float32)
