"""Explain a whole dataset: `explain_dataset` streams a loader into per-image records.

One record (row) per image and recipe: the image's position and id, its label, the explained
score, the engine's flags, every map-vs-box score, the judge's verdict and optionally the maps.
Records are written to disk as Parquet part files while the loader is read, so memory does not
grow with the dataset, a killed run resumes where it stopped, and under ``torchrun`` every
process writes its own parts of one shared result.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from torch import Tensor, nn

from embedcam import _dist
from embedcam._loaders import (
    Batch,
    check_fixed_order,
    is_sequential,
    iter_batches,
    sample_paths,
    subset_loader,
)
from embedcam.atomic import atomic_write_bytes, atomic_write_text, remove_stale_temporaries
from embedcam.boxes import boxes_to_masks
from embedcam.centroids import ClassCentroids
from embedcam.errors import ConfigurationError, DataError
from embedcam.recipe import Recipe
from embedcam.scoring import (
    TORCHRAY_TOLERANCE,
    Criterion,
    baseline_scores,
    judge_features,
    score_maps,
)
from embedcam.scoring.judge import RENAMED_THRESHOLDS, check_criteria

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import pyarrow

__all__ = [
    "Judge",
    "DatasetRecords",
    "explain_dataset",
    "SCORE_COLUMNS",
    "BASELINE_COLUMNS",
    "RECORDS_SCHEMA",
]

#: Version tag of the records folder layout (``_manifest.json``).
RECORDS_SCHEMA = "embedcam.records/2"

#: Map-vs-region scores stored per record (see `embedcam.scoring.score_maps`); ``ceiling``
#: is `embedcam.scoring.box_map_ceiling`, the energy in box a box-shaped map reaches on the
#: CAM grid (report it, and ``area_fraction``, the chance level, beside ``energy_in_box``).
SCORE_COLUMNS = (
    "energy_in_box",
    "energy_lift",
    "area_fraction",
    "pointing_game",
    "pointing_game_tolerant",
    "rank_accuracy",
    "pixel_auc",
    "region_iou",
    "region_precision",
    "region_recall",
    "wsol_box_iou",
    "positive_share",
    "ceiling",
)

#: Baselines stored beside the scores (see `embedcam.scoring.baseline_scores`): the centred
#: Gaussian's energy in box, pointing hit and region IoU, and the region IoU of the box drawn on
#: the CAM grid (``ceiling`` above is its energy in box; ``area_fraction`` is the box-area chance).
BASELINE_COLUMNS = (
    "gaussian_energy_in_box",
    "gaussian_pointing_game",
    "gaussian_region_iou",
    "ceiling_region_iou",
)

MapsOption = Literal["none", "raw", "full", "both"]


class Judge(BaseModel):
    """The settings of the automated "features correct" judge (`embedcam.judge_features`).

    Each threshold is named after the score it thresholds, as in `judge_features`.

    Attributes:
        criterion: A `Criterion` of `judge_features` or a tuple of them.
        combine: ``"all"`` or ``"any"`` for several criteria.
        positive_share: Threshold of ``"paper"`` on ``positive_share``.
        energy: Threshold of ``"energy"`` (the default criterion) on ``energy_in_box``.
        region_iou: Threshold of ``"region_iou"`` on ``region_iou``.
        wsol_box_iou: Threshold of ``"wsol"`` on ``wsol_box_iou``.
        theta: Relative threshold of the evidence region.
        tolerance: Pixel tolerance of ``"pointing"``; 0 (the default, as in `judge_features`) is
            the strict game. Records also store the game at `TORCHRAY_TOLERANCE` (15 px), so
            `from_scores` accepts 0 or 15.

    The former names ``share``, ``iou`` and ``box_iou`` are still accepted as keywords (and
    readable as attributes), with a ``DeprecationWarning``.

    Raises:
        ConfigurationError: An unknown or empty criterion, a threshold out of range, an unknown
            field (the message names it), or a threshold given under its old and new name.

    Examples:
        >>> Judge().criterion, Judge(criterion="paper", positive_share=0.4).positive_share
        ('energy', 0.4)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    criterion: Criterion | tuple[Criterion, ...] = "energy"
    combine: Literal["all", "any"] = "all"
    positive_share: float = Field(0.5, ge=0, le=1)
    energy: float = Field(0.5, ge=0, le=1)
    region_iou: float = Field(0.5, ge=0, le=1)
    wsol_box_iou: float = Field(0.5, ge=0, le=1)
    theta: float = Field(0.15, gt=0, le=1)
    tolerance: float = Field(0.0, ge=0)

    def __init__(self, **fields: Any) -> None:
        try:
            super().__init__(**fields)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'judge'}: {e['msg']}" for e in err.errors()
            )
            raise ConfigurationError(f"invalid judge settings {fields!r}: {problems}") from None

    @model_validator(mode="before")
    @classmethod
    def _renamed_thresholds(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not set(data) & set(RENAMED_THRESHOLDS):
            return data
        data = dict(data)
        for old, new in RENAMED_THRESHOLDS.items():
            if old not in data:
                continue
            if new in data:
                raise ValueError(f"pass {new} only, not also its old name {old}")
            warnings.warn(
                f"Judge({old}=...) is deprecated; use {new}=... (the threshold is named after "
                "its score)",
                DeprecationWarning,
                stacklevel=4,
            )
            data[new] = data.pop(old)
        return data

    @field_validator("criterion", mode="before")
    @classmethod
    def _check_criterion(cls, value: Any) -> Any:
        try:
            check_criteria(value)
        except ConfigurationError as err:
            raise ValueError(str(err)) from None
        return value

    @property
    def share(self) -> float:
        """Deprecated: the former name of `positive_share`."""
        return self._renamed("share")

    @property
    def iou(self) -> float:
        """Deprecated: the former name of `region_iou`."""
        return self._renamed("iou")

    @property
    def box_iou(self) -> float:
        """Deprecated: the former name of `wsol_box_iou`."""
        return self._renamed("box_iou")

    def _renamed(self, old: str) -> float:
        new = RENAMED_THRESHOLDS[old]
        warnings.warn(
            f"Judge.{old} is deprecated; read Judge.{new}", DeprecationWarning, stacklevel=3
        )
        return float(getattr(self, new))

    def from_scores(self, scores: Any) -> Tensor:
        """The verdicts from stored scores (records columns) instead of maps.

        Gives exactly what `__call__` gives on the maps, because every criterion is a
        threshold on one score that `explain_dataset` stores: ``paper`` on
        ``positive_share``, ``energy`` on ``energy_in_box``, ``pointing`` on ``pointing_game``
        (``pointing_game_tolerant`` for ``tolerance=15``), ``region_iou`` on ``region_iou`` and
        ``wsol`` on ``wsol_box_iou`` (both stored at ``theta=0.15``). Use it to try other
        thresholds on records without explaining again.

        Args:
            scores: A mapping (e.g. a pandas DataFrame or a dict of arrays) with the score
                columns and ``no_evidence``.

        Returns:
            ``(N,)`` bool; NaN scores and ``no_evidence`` rows are never correct.

        Raises:
            ConfigurationError: ``theta`` other than 0.15 or ``tolerance`` other than 0 or 15
                (those scores are not stored).
            DataError: A needed column is missing, not numeric, or of another length.
        """
        if self.theta != 0.15 and {"region_iou", "wsol"} & set(self._criteria()):
            raise ConfigurationError("records store region scores at theta=0.15 only")
        if self.tolerance not in (0.0, TORCHRAY_TOLERANCE) and "pointing" in self._criteria():
            raise ConfigurationError(
                f"records store pointing at tolerance 0 and {TORCHRAY_TOLERANCE:g} px only"
            )

        lengths: dict[str, int] = {}

        def col(name: str) -> Tensor:
            try:
                v = scores[name]
            except (KeyError, IndexError, TypeError):
                raise DataError(
                    f"scores have no column {name!r}; pass the records of explain_dataset "
                    "(DatasetRecords.to_pandas() or a dict of its score columns)"
                ) from None
            try:
                arr = np.asarray(getattr(v, "to_numpy", lambda: v)(), dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise DataError(f"scores column {name!r} must hold numbers: {err}") from None
            if arr.ndim != 1:
                raise DataError(f"scores column {name!r} must be 1-D, got shape {arr.shape}")
            lengths[name] = arr.shape[0]
            if len(set(lengths.values())) > 1:
                raise DataError(f"scores columns have different lengths: {lengths}")
            return torch.from_numpy(arr)

        rules = {
            "paper": ("positive_share", self.positive_share),
            "energy": ("energy_in_box", self.energy),
            "pointing": (
                "pointing_game" if self.tolerance == 0 else "pointing_game_tolerant",
                1.0,
            ),
            "region_iou": ("region_iou", self.region_iou),
            "wsol": ("wsol_box_iou", self.wsol_box_iou),
        }
        parts = []
        for c in self._criteria():
            name, thr = rules[c]
            parts.append(col(name) >= thr)  # NaN compares False
        stacked = torch.stack(parts)
        verdict = stacked.all(0) if self.combine == "all" else stacked.any(0)
        no_ev = torch.from_numpy(np.asarray(col("no_evidence").numpy() > 0))
        return verdict & ~no_ev

    def _criteria(self) -> list[str]:
        return [self.criterion] if isinstance(self.criterion, str) else list(self.criterion)

    def __call__(self, maps: Tensor, regions: Tensor, negatives: str = "clamp") -> Tensor:
        """Judge a batch: ``(B, H, W)`` maps and bool regions -> ``(B,)`` bool."""
        return judge_features(
            maps,
            regions,
            self.criterion,
            combine=self.combine,
            positive_share=self.positive_share,
            energy=self.energy,
            region_iou=self.region_iou,
            wsol_box_iou=self.wsol_box_iou,
            theta=self.theta,
            tolerance=self.tolerance,
            negatives=negatives,  # type: ignore[arg-type]
        )


def _schema(maps: MapsOption) -> pyarrow.Schema:
    import pyarrow as pa

    cols = [
        ("position", pa.int64()),
        ("id", pa.string()),
        ("label", pa.int64()),
        ("recipe", pa.string()),
        ("score", pa.float32()),
        ("empty", pa.bool_()),
        ("degenerate", pa.bool_()),
        ("grid_h", pa.int32()),
        ("grid_w", pa.int32()),
        ("region", pa.string()),
        ("no_evidence", pa.bool_()),
        *[(c, pa.float32()) for c in SCORE_COLUMNS],
        *[(c, pa.float32()) for c in BASELINE_COLUMNS],
        ("verdict", pa.bool_()),
    ]
    if maps in ("raw", "both"):
        cols.append(("raw", pa.list_(pa.float32())))
    if maps in ("full", "both"):
        cols += [("map_h", pa.int32()), ("map_w", pa.int32())]
        cols.append(("map", pa.list_(pa.float16())))
    return pa.schema(cols)


def _digest(h: Any, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.dtype == torch.bfloat16:
        t = t.float()
    h.update(t.numpy().tobytes())


def _model_digest(model: nn.Module) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        if isinstance(t, Tensor):
            _digest(h, t)
    return h.hexdigest()


def _item_digest(h: Any, item: Any) -> None:
    """Feed the tensors, numbers and strings of one dataset item into ``h``, in order."""
    if isinstance(item, Tensor):
        _digest(h, item)
    elif isinstance(item, np.ndarray):
        _digest(h, torch.from_numpy(np.ascontiguousarray(item)))
    elif isinstance(item, Mapping):
        for k in sorted(item, key=str):
            h.update(str(k).encode())
            _item_digest(h, item[k])
    elif isinstance(item, (list, tuple)):
        h.update(f"seq{len(item)}".encode())
        for x in item:
            _item_digest(h, x)
    else:
        h.update(repr(item).encode())


def _file_digest(path: str) -> str:
    """blake2b of a file's bytes; ``"missing"`` when it cannot be read."""
    try:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fh:  # hashlib.file_digest needs Python 3.11
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return "missing"


def _data_digest(
    loader: Iterable[Any], paths: list[str] | None, n_total: int | None
) -> tuple[str | None, dict[str, str] | None]:
    """What the records depend on beyond the paths: the files' bytes and the first item.

    Returns the digest for the resume key and, for datasets of files, one digest per file (kept
    in the manifest to name the files that changed). Hashing the bytes, not sizes and times,
    also catches a same-size edit whose modification time was restored (``cp -p``, ``rsync
    -a``); it reads each file once, which costs far less than decoding it (2,640 Grocery Store
    photos, 42 MB: 0.4 s). The first item as the loader's dataset returns it (after its
    transform) catches a changed transform (size, normalisation) and non-file datasets.
    """
    h = hashlib.blake2b(digest_size=16)
    files: dict[str, str] | None = None
    if paths is not None:
        files = {path: _file_digest(path) for path in paths}
        for path in paths:
            h.update(f"{files[path]};".encode())
    if n_total:
        dataset = loader.dataset  # type: ignore[attr-defined]
        _item_digest(h, dataset[0])
    elif paths is None:
        return None, None
    return h.hexdigest(), files


def _changed_files(old: Any, new: dict[str, str] | None) -> str:
    """`` (first changed files: 'a.jpg', 'b.jpg')`` from two manifests' file digests."""
    if not isinstance(old, dict) or new is None:
        return ""
    changed = [p for p, d in new.items() if old.get(p) != d]
    if not changed:
        return " (the files are unchanged: the dataset's first item differs)"
    shown = ", ".join(repr(p) for p in changed[:3])
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    return f" (changed files: {shown}{more})"


def _tensor_digest(t: Tensor | None) -> str | None:
    if t is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    _digest(h, t)
    return h.hexdigest()


@dataclass
class DatasetRecords:
    """The records of one `explain_dataset` run, on disk or in memory.

    Read them with `table` (pyarrow), `to_pandas`, or any Parquet reader on
    `path` (``pandas.read_parquet(path)``, ``polars.read_parquet(f"{path}/*.parquet")``).

    Attributes:
        path: The records folder (``None`` for in-memory records).
        recipes: The recipes, in column order of the ``recipe`` field.
        rows: Number of records (images x recipes).
        images: Number of images.
    """

    path: Path | None
    recipes: list[Recipe]
    rows: int
    images: int
    _table: Any = None

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "in memory"
        names = [r.name for r in self.recipes]
        return f"DatasetRecords({where}, images={self.images}, recipes={names})"

    def table(self, columns: Sequence[str] | None = None) -> pyarrow.Table:
        """All records as a pyarrow table, sorted by position then recipe order.

        Args:
            columns: Only these columns (e.g. leave out ``map`` to save memory).

        Returns:
            The table.

        Raises:
            DataError: A part file is unreadable (the message names it).
        """
        import pyarrow.parquet as pq

        if self._table is not None:
            t = self._table
            return t.select(list(columns)) if columns is not None else t
        assert self.path is not None
        parts = sorted(self.path.glob("part-*.parquet"))
        cols = list(columns) if columns else None
        tables = [_read_part(p, lambda f: pq.read_table(f, columns=cols)) for p in parts]
        import pyarrow as pa

        return pa.concat_tables(tables) if tables else _schema("none").empty_table()

    def to_pandas(self, columns: Sequence[str] | None = None) -> pandas.DataFrame:
        """The records as a pandas DataFrame (needs pandas: ``pip install "embedcam[pandas]"``).

        Args:
            columns: Only these columns.

        Returns:
            One row per image and recipe.

        Raises:
            ConfigurationError: If pandas is not installed
                ([`table`][embedcam.pipeline.DatasetRecords.table] needs only pyarrow).
        """
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "to_pandas needs pandas, which embedcam does not install: pip install pandas "
                '(or "embedcam[pandas]"), or read the records with .table() (pyarrow)'
            ) from None
        return self.table(columns).to_pandas()

    def column(self, name: str, recipe: Recipe | str) -> Tensor:
        """One numeric or bool column of one recipe, ordered by position, as a tensor.

        Args:
            name: Column name (``"score"``, ``"energy_in_box"``, ``"verdict"``, ...).
            recipe: The recipe or its name.

        Returns:
            ``(N,)`` tensor; nulls become NaN (float) or False (bool).

        Raises:
            ConfigurationError: Unknown column or recipe.
        """
        import pyarrow.compute as pc

        key = recipe.name if isinstance(recipe, Recipe) else recipe
        if key not in [r.name for r in self.recipes]:
            raise ConfigurationError(
                f"unknown recipe {key!r}; these records hold {[r.name for r in self.recipes]}"
            )
        t = self.table(["recipe", name]) if name != "recipe" else self.table(["recipe"])
        if name not in t.column_names:
            raise ConfigurationError(f"records have no column {name!r}")
        col = t.filter(pc.equal(t["recipe"], key))[name]
        arr = col.to_numpy(zero_copy_only=False)
        if arr.dtype == object:  # nullable bool
            return torch.tensor([bool(v) if v is not None else False for v in arr])
        return torch.from_numpy(np.array(arr, copy=True))

    def maps(self, recipe: Recipe | str, positions: Sequence[int] | None = None) -> Tensor:
        """Stored full-resolution maps of one recipe (``maps="full"`` or ``"both"``).

        Args:
            recipe: The recipe or its name.
            positions: Only these dataset positions (default: all).

        Returns:
            ``(N, H, W)`` float32 maps (stored as float16).

        Raises:
            ConfigurationError: The run did not store maps.
        """
        import pyarrow.compute as pc

        key = recipe.name if isinstance(recipe, Recipe) else recipe
        t = self.table()
        if "map" not in t.column_names:
            raise ConfigurationError(
                "these records hold no maps; run explain_dataset(..., maps='full')"
            )
        t = t.filter(pc.equal(t["recipe"], key))
        if positions is not None:
            import pyarrow as pa

            t = t.filter(pc.is_in(t["position"], value_set=pa.array(list(positions))))
        if t.num_rows == 0:
            return torch.zeros(0, 0, 0)
        h, w = int(t["map_h"][0].as_py()), int(t["map_w"][0].as_py())
        flat = np.stack([np.asarray(v, dtype=np.float16) for v in t["map"].to_pylist()])
        return torch.from_numpy(flat.astype(np.float32)).view(-1, h, w)


def _read_part(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)`` for one Parquet part, a corrupt part becoming a `DataError` naming it."""
    import pyarrow as pa

    try:
        return read(path)
    except (OSError, pa.ArrowException) as err:
        raise DataError(
            f"cannot read records part {path}: {type(err).__name__}: {str(err)[:200]}; delete "
            "it and run explain_dataset again with the same arguments to recompute it"
        ) from err


class _Writer:
    """Buffers rows and writes one Parquet part per ``part_size`` positions, atomically."""

    def __init__(self, out: Path | None, part_size: int, schema: pyarrow.Schema) -> None:
        self.out, self.part_size, self.schema = out, part_size, schema
        self.buffer: dict[int, list[dict[str, Any]]] = {}
        self.tables: list[Any] = []

    def add(self, part: int, rows: list[dict[str, Any]]) -> None:
        self.buffer.setdefault(part, []).extend(rows)

    def flush(self, part: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self.buffer.pop(part, [])
        rows.sort(key=lambda r: (r["position"], r["_order"]))
        for r in rows:
            del r["_order"]
        table = pa.Table.from_pylist(rows, schema=self.schema)
        if self.out is None:
            self.tables.append(table)
            return
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        atomic_write_bytes(self.out / f"part-{part:06d}.parquet", buf.getvalue())


def _finite(x: Tensor) -> list[float | None]:
    return [None if math.isnan(v) else v for v in x.detach().float().cpu().tolist()]


def _regions(batch: Batch) -> tuple[Tensor | None, str | None]:
    size = (int(batch.images.shape[-2]), int(batch.images.shape[-1]))
    if batch.boxes is not None:
        return boxes_to_masks(batch.boxes, size=size), "box"
    if batch.masks is not None:
        return batch.masks, "mask"
    return None, None


def _explain_batch(
    batch: Batch,
    positions: list[int],
    ids: list[str],
    cams: list[tuple[int, Recipe, Any]],
    centroids: Tensor | None,
    references: Tensor | None,
    judge: Judge,
    maps: MapsOption,
    auc: bool,
) -> list[dict[str, Any]]:
    regions, region_kind = _regions(batch)
    refs = batch.references if batch.references is not None else references
    rows: list[dict[str, Any]] = []
    labels = batch.labels.tolist()
    for order, recipe, cam in cams:
        device = batch.images.device
        cents = centroids.to(device) if centroids is not None else None
        target = recipe.make_target(cents, batch.labels, refs)
        res = cam(batch.images, target)
        shown = res.signed_maps() if recipe.signed else res.maps
        cols: dict[str, list[Any]] = {}
        if regions is not None:
            reg = regions.to(shown.device)
            sc = score_maps(shown, reg, negatives=recipe.negatives, auc=auc)
            for c in SCORE_COLUMNS[:-1]:
                cols[c] = _finite(getattr(sc, c))
            base = baseline_scores(reg, grid=(int(res.raw.shape[-2]), int(res.raw.shape[-1])))
            assert base.ceiling is not None  # a grid was given
            cols["ceiling"] = _finite(base.ceiling)
            for c in BASELINE_COLUMNS:
                cols[c] = _finite(getattr(base, c))
            cols["no_evidence"] = sc.no_evidence.cpu().tolist()
            cols["verdict"] = judge(shown, reg, recipe.negatives).cpu().tolist()
        scores = _finite(res.scores)
        empty = res.empty.cpu().tolist()
        degenerate = res.degenerate.cpu().tolist()
        gh, gw = int(res.raw.shape[-2]), int(res.raw.shape[-1])
        raw = res.raw.detach().float().cpu().flatten(1).numpy() if maps in ("raw", "both") else None
        full = (
            shown.detach().cpu().to(torch.float16).flatten(1).numpy()
            if maps in ("full", "both")
            else None
        )
        for i in range(len(batch)):
            row: dict[str, Any] = {
                "position": positions[i],
                "id": ids[i],
                "label": labels[i],
                "recipe": recipe.name,
                "score": scores[i],
                "empty": empty[i],
                "degenerate": degenerate[i],
                "grid_h": gh,
                "grid_w": gw,
                "region": region_kind,
                "_order": order,
            }
            for c, v in cols.items():
                row[c] = v[i]
            if raw is not None:
                row["raw"] = raw[i]
            if full is not None:
                row["map_h"], row["map_w"] = int(shown.shape[-2]), int(shown.shape[-1])
                row["map"] = full[i]
            rows.append(row)
    return rows


def _as_centroids(centroids: ClassCentroids | Tensor | None) -> Tensor | None:
    if centroids is None:
        return None
    if isinstance(centroids, ClassCentroids):
        return centroids.centroids
    if isinstance(centroids, Tensor):
        return centroids
    raise ConfigurationError(
        f"centroids must be ClassCentroids or a (C, D) tensor, got {type(centroids).__name__}"
    )


def as_recipes(recipes: Recipe | Sequence[Recipe]) -> list[Recipe]:
    """``recipes`` as a non-empty list of valid, uniquely named recipes (shared with audit)."""
    if isinstance(recipes, Recipe):
        out = [recipes]
    elif isinstance(recipes, (str, bytes)) or not isinstance(recipes, Iterable):
        raise ConfigurationError(
            f"recipes must be a Recipe or a list of Recipes, got {type(recipes).__name__}; e.g. "
            "[ec.Recipe(layer='layer4')], or ec.Recipe.parse('layer=layer4') for a string"
        )
    else:
        out = list(recipes)
    if not out:
        raise ConfigurationError(
            "recipes is empty; pass at least one Recipe, e.g. ec.Recipe(layer='layer4')"
        )
    for r in out:
        if not isinstance(r, Recipe):
            raise ConfigurationError(f"recipes must be embedcam.Recipe objects, got {r!r}")
        r.check()
    names = [r.name for r in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigurationError(f"recipe names must be unique; repeated: {dup}")
    return out


def _prepare_out(
    out: Path, key: dict[str, Any], overwrite: bool, files: dict[str, str] | None = None
) -> str | DataError | None:
    """Create or check the manifest on rank 0; return an error (message) or None."""
    manifest = out / "_manifest.json"
    if out.exists() and not out.is_dir():
        return f"out={str(out)!r} is a file; pass a folder for the records"
    if manifest.exists():
        try:
            old = json.loads(manifest.read_bytes().decode("utf-8"))
        except (OSError, ValueError, RecursionError) as err:
            # ValueError covers UnicodeDecodeError and JSONDecodeError; RecursionError a file of
            # deeply nested brackets
            reason = f"{type(err).__name__}: {str(err)[:200]}"
            return DataError(
                f"cannot read {manifest} ({reason}); delete the folder or pass overwrite=True"
            )
        if not isinstance(old, dict) or not isinstance(old.get("key", {}), dict):
            return DataError(
                f"{manifest} is not a records manifest (expected a JSON object with 'schema' and "
                "'key'); delete the folder or use another one"
            )
        if old.get("schema") != RECORDS_SCHEMA and not overwrite:
            return (
                f"{out} holds records of schema {old.get('schema')!r} (an older embedcam), not "
                f"{RECORDS_SCHEMA!r}; use another folder, or pass overwrite=True to replace them"
            )
        if old.get("key") != key or old.get("schema") != RECORDS_SCHEMA:
            if not overwrite:
                changed = sorted(
                    k
                    for k in set(key) | set(old.get("key", {}))
                    if key.get(k) != old.get("key", {}).get(k)
                )
                hint = (
                    " ('data': the image files or the dataset's first item differ, so the "
                    "export changed in place or the dataset's transform is random; explain with "
                    f"a deterministic transform){_changed_files(old.get('files'), files)}"
                    if "data" in changed
                    else ""
                )
                return (
                    f"{out} holds records of a different run (changed: {changed}){hint}; use "
                    "another folder, or pass overwrite=True to replace them"
                )
            for p in out.glob("part-*.parquet"):
                p.unlink()
    elif out.exists() and any(out.glob("part-*.parquet")):
        return f"{out} holds part files but no _manifest.json; delete them or use another folder"
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # part files half-written by a killed run, not a live one's
    atomic_write_text(
        manifest,
        json.dumps(
            {"schema": RECORDS_SCHEMA, "key": key, "complete": False, "files": files}, indent=2
        ),
    )
    return None


def explain_dataset(
    model: nn.Module,
    loader: Iterable[Any],
    centroids: ClassCentroids | Tensor | None,
    recipes: Recipe | Sequence[Recipe],
    *,
    out: str | os.PathLike[str] | None = None,
    references: Tensor | None = None,
    judge: Judge | None = None,
    maps: MapsOption = "none",
    auc: bool = False,
    part_size: int | None = None,
    overwrite: bool = False,
    embedding_fn: Callable[[Any], Tensor] | None = None,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
    progress: bool = True,
) -> DatasetRecords:
    """Explain every image of a loader with every recipe; score the maps; judge them.

    For each batch and recipe the model is explained with `EmbeddingCAM`
    (same maps, scores and ``empty`` flag as the single-batch API); when the batch has boxes or
    masks, every map-vs-region score of `score_maps` and the judge's
    verdict are recorded too (boxes are preferred over masks, the ``region`` column says which).
    Signed recipes are scored on ``|signed map|``.

    **Batches** may be ``(images, labels)``, ``(images, labels, boxes)`` (one ``(K, 4)`` xyxy
    tensor per image), ``(images, labels, masks)`` (``(B, H, W)`` bool), or dicts with ``image``
    and ``label`` keys and optionally ``boxes``, ``mask``, ``reference`` (``(B, D)``), ``index``
    and ``id`` - e.g. `embedcam.datasets.ImageDataset` with
    `collate_boxes`. The loader must have a fixed order (no
    ``shuffle=True``).

    **On disk** (``out`` given): Parquet part files ``part-NNNNNN.parquet`` (one per
    ``part_size`` dataset positions) and a ``_manifest.json``. A part is written atomically once
    complete, so a killed run is resumed by calling again with the same arguments: finished
    parts are not recomputed, and the result equals an uninterrupted run. The manifest keys the
    folder by everything that determines the records (recipes, judge, centroids, model weights,
    dataset size and file paths, batch and part size, stored maps); a call with other settings
    is refused rather than mixed in. For a DataLoader over a map-style dataset, finished parts
    are not even loaded; other iterables are read again but not re-explained.

    **Several processes** (``torchrun``, ``torch.distributed`` initialised): the dataset's parts
    are split into contiguous shards, one per rank, without duplicates or drops; each rank
    writes its parts and rank 0 completes the manifest. The folder then holds exactly the files a
    one-process run writes (same batches, so the same numbers at equal thread counts). Needs a
    DataLoader over a map-style dataset, the same on every rank, and an ``out`` folder that all
    ranks see.

    **Maps**: ``maps="raw"`` stores each signed layer-resolution map (float32: raw similarity
    maps can be ~1e-6, below float16's normal range); ``"full"`` stores the scored map at input
    resolution as float16 (values in ``[0, 1]`` or ``[-1, 1]``, error <= 5e-4); ``"both"``.

    Args:
        model: The embedding model (left as it was: mode, flags and gradients are restored).
        loader: A DataLoader (or any iterable) of batches in a fixed order.
        centroids: Class centroids for ``"centroid"``/``"contrastive"`` recipes, or ``None``.
        recipes: One recipe or several (names must be unique).
        out: Records folder; ``None`` keeps the records in memory.
        references: ``(D,)`` or ``(B, D)`` reference embeddings for ``"reference"`` recipes when
            batches carry no ``reference`` key.
        judge: Judge settings (default `Judge`: energy in box >= 0.5).
        maps: ``"none"``, ``"raw"``, ``"full"`` or ``"both"``.
        auc: Also compute the pixel AUC (the slowest score).
        part_size: Dataset positions per part file (default: the multiple of the batch size
            nearest to 1024).
        overwrite: Replace records in ``out`` made with other settings.
        embedding_fn: Picks the embedding from a tuple/dict model output.
        reshape_transform: Maps token outputs to ``(B, K, h, w)`` (ViT).
        progress: Show a rich progress bar (rank 0 only).

    Returns:
        The `DatasetRecords`.

    Raises:
        ConfigurationError: Empty or duplicate recipes, a shuffled loader, a bad option, or an
            ``out`` folder that holds another run's records.
        DataError: A malformed batch (the message names the batch and the accepted forms), or
            an ``out`` folder whose ``_manifest.json`` or part file is corrupt (named).
        EmbedcamValueError: A recipe that needs centroids or references without them.

    Examples:
        >>> import torch, embedcam as ec
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> images, labels = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 0, 1, 0, 1])
        >>> boxes = [torch.tensor([[0.0, 0.0, 4.0, 4.0]])] * 6
        >>> loader = [(images[:3], labels[:3], boxes[:3]), (images[3:], labels[3:], boxes[3:])]
        >>> cents = ec.ClassCentroids.fit(net, [(images, labels)], progress=False)
        >>> recs = ec.explain_dataset(net, loader, cents, ec.Recipe(layer="1"), progress=False)
        >>> recs.images, recs.table().num_rows, recs.column("verdict", "centroid/1/gradcam").shape
        (6, 6, torch.Size([6]))
    """
    recipe_list = as_recipes(recipes)
    judge = judge if judge is not None else Judge()
    if not isinstance(judge, Judge):
        raise ConfigurationError(f"judge must be an embedcam.Judge, got {type(judge).__name__}")
    if maps not in ("none", "raw", "full", "both"):
        raise ConfigurationError(f"maps must be 'none', 'raw', 'full' or 'both', got {maps!r}")
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_fixed_order(loader, "loader")
    cents = _as_centroids(centroids)
    if references is not None:
        references = torch.as_tensor(references)
    rank, world = _dist.rank_world()
    sequential = is_sequential(loader)
    if world > 1 and not sequential:
        raise ConfigurationError(
            "under torch.distributed, explain_dataset shards the dataset itself: pass a "
            "DataLoader over a map-style dataset with shuffle=False (not a DistributedSampler "
            "or a plain iterable), the same on every rank"
        )
    n_total = len(loader.dataset) if sequential else None  # type: ignore[attr-defined]
    batch_size = getattr(loader, "batch_size", None) or 1
    if part_size is None:
        part_size = max(batch_size, round(1024 / batch_size) * batch_size)
    if not isinstance(part_size, int) or part_size < 1:
        raise ConfigurationError(f"part_size must be a positive int, got {part_size!r}")
    paths = sample_paths(loader)
    key: dict[str, Any] = {
        "recipes": [r.model_dump(mode="json") for r in recipe_list],
        "judge": judge.model_dump(mode="json"),
        "maps": maps,
        "auc": auc,
        "centroids": _tensor_digest(cents),
        "references": _tensor_digest(references),
        "model": _model_digest(model),
        "images": n_total,
        "paths": hashlib.blake2b("\n".join(paths).encode(), digest_size=16).hexdigest()
        if paths is not None
        else None,
        "data": None,
        "batch_size": batch_size,
        "part_size": part_size,
    }
    out_path = Path(out) if out is not None else None
    done: set[int] = set()
    files: dict[str, str] | None = None
    if out_path is not None:
        problem = None
        if rank == 0:  # only rank 0 checks the manifest: only it reads the files
            key["data"], files = _data_digest(loader, paths, n_total)
            problem = _prepare_out(out_path, key, overwrite, files)
        problem = _dist.broadcast_object(problem)
        if isinstance(problem, DataError):
            raise problem
        if problem is not None:
            raise ConfigurationError(problem)
        done = {int(p.stem.split("-")[1]) for p in out_path.glob("part-*.parquet")}
    cams = [
        (i, r, r.cam(model, embedding_fn=embedding_fn, reshape_transform=reshape_transform))
        for i, r in enumerate(recipe_list)
    ]
    writer = _Writer(out_path, part_size, _schema(maps))
    if sequential:
        assert n_total is not None
        n_parts = math.ceil(n_total / part_size)
        mine = range(n_parts * rank // world, n_parts * (rank + 1) // world)
        todo = [k for k in mine if k not in done]
        positions = [
            p for k in todo for p in range(k * part_size, min(n_total, (k + 1) * part_size))
        ]
        source: Iterable[Any] = subset_loader(loader, positions)  # type: ignore[arg-type]
        total: int | None = len(positions)
    else:
        positions, source, total = [], loader, None
    _run(
        source,
        positions if sequential else None,
        paths,
        done,
        writer,
        cams,
        cents,
        references,
        judge,
        maps,
        auc,
        part_size,
        total,
        progress and rank == 0,
    )
    _dist.barrier()
    if out_path is None:
        tables = [t for ts in _dist.all_gather_objects(writer.tables) for t in ts]
        import pyarrow as pa

        table = (
            pa.concat_tables(tables).sort_by([("position", "ascending")])
            if tables
            else _schema(maps).empty_table()
        )
        table = _stable_order(table, recipe_list)
        images = len(set(table["position"].to_pylist()))
        return DatasetRecords(None, recipe_list, table.num_rows, images, table)
    import pyarrow.parquet as pq

    parts = sorted(out_path.glob("part-*.parquet"))
    rows = sum(_read_part(p, lambda f: pq.ParquetFile(f).metadata.num_rows) for p in parts)
    images = rows // len(recipe_list)
    if rank == 0:
        if n_total is not None and images != n_total:
            raise DataError(
                f"{out_path} holds {images} images but the dataset has {n_total}; a rank failed "
                "or a part file was removed: run again to fill the gap"
            )
        atomic_write_text(
            out_path / "_manifest.json",
            json.dumps(
                {
                    "schema": RECORDS_SCHEMA,
                    "key": key,
                    "complete": True,
                    "images": images,
                    "rows": rows,
                    "parts": len(parts),
                    "recipes": [r.name for r in recipe_list],
                    "files": files,
                },
                indent=2,
            ),
        )
    _dist.barrier()
    return DatasetRecords(out_path, recipe_list, rows, images)


def _stable_order(table: Any, recipes: list[Recipe]) -> Any:
    import pyarrow as pa

    order = {r.name: i for i, r in enumerate(recipes)}
    keys = [
        (p, order[r]) for p, r in zip(table["position"].to_pylist(), table["recipe"].to_pylist())
    ]
    idx = sorted(range(len(keys)), key=keys.__getitem__)
    return table.take(pa.array(idx, type=pa.int64()))


def _run(
    source: Iterable[Any],
    positions: list[int] | None,
    paths: list[str] | None,
    done: set[int],
    writer: _Writer,
    cams: list[tuple[int, Recipe, Any]],
    cents: Tensor | None,
    references: Tensor | None,
    judge: Judge,
    maps: MapsOption,
    auc: bool,
    part_size: int,
    total: int | None,
    progress: bool,
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]explain"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("images"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not progress,
        transient=True,
    )
    seen = 0
    current: int | None = None
    with bar:
        task = bar.add_task("explain", total=total)
        for _, batch in iter_batches(source):
            n = len(batch)
            pos = (
                positions[seen : seen + n] if positions is not None else list(range(seen, seen + n))
            )
            if len(pos) != n:
                raise DataError(
                    "the loader yielded more images than its dataset holds; explain_dataset "
                    "needs a loader in a fixed order (shuffle=False, no drop or repeat)"
                )
            seen += n
            keep = [i for i, p in enumerate(pos) if p // part_size not in done]
            if keep:
                if len(keep) < n:
                    batch = _take(batch, keep)
                    pos = [pos[i] for i in keep]
                ids = _ids(batch, pos, paths)
                rows = _explain_batch(batch, pos, ids, cams, cents, references, judge, maps, auc)
                for r in rows:
                    writer.add(r["position"] // part_size, [r])
            # flush every part this batch completed (positions arrive in increasing order)
            last = pos[-1] // part_size if pos else current
            for k in sorted(writer.buffer):
                if last is not None and k < last:
                    writer.flush(k)
            current = last
            bar.advance(task, n)
        for k in sorted(writer.buffer):
            writer.flush(k)


def _take(batch: Batch, keep: list[int]) -> Batch:
    idx = torch.tensor(keep)
    return Batch(
        images=batch.images[idx],
        labels=batch.labels[idx],
        boxes=[batch.boxes[i] for i in keep] if batch.boxes is not None else None,
        masks=batch.masks[idx] if batch.masks is not None else None,
        references=batch.references[idx] if batch.references is not None else None,
        index=batch.index[idx] if batch.index is not None else None,
        ids=[batch.ids[i] for i in keep] if batch.ids is not None else None,
    )


def _ids(batch: Batch, positions: list[int], paths: list[str] | None) -> list[str]:
    if batch.ids is not None:
        return batch.ids
    if paths is not None:
        return [paths[p] if 0 <= p < len(paths) else str(p) for p in positions]
    return [str(p) for p in positions]
