"""Configuration of the SKU benchmark: a pydantic model, presets, YAML/JSON files, CLI overrides."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import embedcam as ec
from embedcam.errors import ConfigurationError

LOSSES = ("triplet", "focal", "flexible")


class RecipeSpec(BaseModel):
    """One of the benchmark's explanation recipes, named relative to the paper's CNN.

    Resolved per trained model and CAM method into an [`embedcam.Recipe`][embedcam.recipe.Recipe]
    (see `resolve`), which is what the library explains, scores and judges with.

    Attributes:
        name: Short name used in tables and file names (the library recipe is
            ``"{name}/{method}"``).
        target: ``"centroid"`` (cosine to the true-class centroid, the paper's recipe) or
            ``"contrastive"`` (true-centroid cosine minus the nearest other centroid's).
        layer: ``"last"`` (the last conv block before pooling, the paper's layer:
            ``model.cam_layer_name``) or ``"before_last"`` (one block earlier: twice the
            resolution, ``model.block_layer_names[-2]``).
        signed: Score ``|raw map|`` upsampled (evidence for and against) instead of the ReLU'd map.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    target: Literal["centroid", "contrastive"] = "centroid"
    layer: Literal["last", "before_last"] = "last"
    signed: bool = False

    def label(self, method: str) -> str:
        """The name of the library recipe for ``method``: ``"{name}/{method}"``."""
        return f"{self.name}/{method}"

    def resolve(self, model: Any, method: str) -> ec.Recipe:
        """The `Recipe` of this spec for a ``paper_sku`` model and a method."""
        layer = model.cam_layer_name if self.layer == "last" else model.block_layer_names[-2]
        return ec.Recipe(
            layer=layer,
            target=self.target,
            method=method,
            signed=self.signed,
            name=self.label(method),
        )


class DataConfig(BaseModel):
    """Where the images come from: a Roboflow export, or the synthetic shelf generator.

    Attributes:
        path: A Roboflow export (COCO/YOLO/VOC give boxes; folder/CSV classification only).
        extra_labels: Additional-labels mapping file (CSV/JSON keyed by class name).
        image_size: Model input size (synthetic images are generated at this size).
        families: Synthetic: product families (shape x body colour).
        siblings: Synthetic: products per family, differing only in a small glyph.
        train_per_class: Synthetic: training images per class.
        valid_per_class: Synthetic: calibration images per class (the judge is calibrated here).
        test_per_class: Synthetic: test images per class (Table 1 is reported here).
        shortcut: Synthetic: probability of the class's home background in train/valid/test.
        cue_contrast: Synthetic: visibility of the sibling glyph (0.35 = subtle, see FINDINGS).
        cue_scale: Synthetic: glyph size relative to normal.
        seed: Synthetic: generator seed.
    """

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None
    extra_labels: Path | None = None
    image_size: int = Field(64, ge=32)
    families: int = Field(5, ge=1)
    siblings: int = Field(2, ge=1)
    train_per_class: int = Field(200, ge=2)
    valid_per_class: int = Field(30, ge=1)
    test_per_class: int = Field(50, ge=1)
    shortcut: float = Field(0.9, ge=0.0, le=1.0)
    cue_contrast: float = Field(0.35, gt=0.0, le=1.0)
    cue_scale: float = Field(0.7, gt=0.0)
    seed: int = 0

    @property
    def synthetic(self) -> bool:
        """Whether the data is generated (no ``path``)."""
        return self.path is None


class TrainSettings(BaseModel):
    """Training settings shared by every model (see ``paper_sku.train.TrainConfig``).

    Every model trains until its validation kNN accuracy has not improved for ``patience``
    epochs (epochs before ``min_epochs`` are a warm-up that neither stops nor is kept; at most
    ``epochs``) and the best epoch is kept.
    ``converged_accuracy`` is not a training rule: it is the accuracy the synthetic control
    must reach for the shortcut check to trust it.
    """

    model_config = ConfigDict(extra="forbid")

    width: float = Field(0.25, gt=0)
    epochs: int = Field(40, ge=1, description="the most epochs a model trains")
    patience: int = Field(5, ge=1, description="epochs without validation improvement")
    min_epochs: int = Field(10, ge=1, description="warm-up: no stop, no kept epoch before it")
    min_delta: float = Field(0.005, ge=0, description="the smallest accuracy gain that counts")
    p: int = Field(8, ge=2)
    k: int = Field(8, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    margin: float = Field(0.2, gt=0)
    sigma: float = Field(1.0, gt=0)
    distance: Literal["squared", "euclidean"] = "squared"
    flexible_margin_fn: Literal["linear", "log"] = "linear"
    converged_accuracy: float = Field(
        0.8, ge=0, le=1, description="valid kNN accuracy the synthetic control must reach"
    )


class SkuConfig(BaseModel):
    """Everything the SKU benchmark does, in one validated object.

    Attributes:
        preset: The preset this config started from.
        data: Data settings.
        train: Training settings.
        losses: Losses to train (the paper's three by default).
        control: Synthetic only: also train the original triplet loss on data without the
            background shortcut, as the clean reference row.
        seeds: Training seeds (at least one); every number is reported per seed and as a
            spread.
        knn_k: Neighbours of the kNN classifier.
        methods: CAM methods run for every recipe.
        recipes: Explanation recipes; the first, with the first method, is the paper's and
            defines Table 1.
        judge_criterion: The judge criterion of Table 1
            ([`embedcam.Judge`][embedcam.pipeline.Judge]).
        judge_share: Threshold of the ``"paper"`` criterion.
        darken_factor: Brightness of darkened pixels in the figures.
        figures: Number of hard images in the paper-style figure.
        bootstrap: Bootstrap resamples for effect-size intervals.
        cam_batch: Images per batch of the audits' loaders (embedding and CAM).
        trust_images: Test images (the first ones) the trust checks run on per model and
            recipe: class specificity, cascading randomisation, deletion/insertion; 0 = off.
        trust_steps: Steps of the deletion and insertion curves.
        device: ``"cpu"`` or ``"cuda"``.
    """

    model_config = ConfigDict(extra="forbid")

    preset: str = "quick"
    data: DataConfig = DataConfig()
    train: TrainSettings = TrainSettings()
    losses: list[Literal["triplet", "focal", "flexible"]] = Field(list(LOSSES), min_length=1)
    control: bool = True
    seeds: list[int] = Field([0], min_length=1)
    knn_k: int = Field(5, ge=1)
    methods: list[Literal["gradcam", "gradcam++"]] = Field(["gradcam", "gradcam++"], min_length=1)
    recipes: list[RecipeSpec] = Field(
        default=[
            RecipeSpec(name="paper", target="centroid", layer="last", signed=False),
            RecipeSpec(name="contrastive", target="contrastive", layer="before_last", signed=True),
        ],
        min_length=1,
    )
    judge_criterion: Literal["paper", "energy", "pointing", "region_iou", "wsol"] = "paper"
    judge_share: float = Field(0.5, ge=0, le=1)
    darken_factor: float = Field(0.25, ge=0, le=1)
    figures: int = Field(6, ge=0)
    bootstrap: int = Field(10_000, ge=100)
    cam_batch: int = Field(128, ge=1)
    trust_images: int = Field(64, ge=0)
    trust_steps: int = Field(10, ge=1)
    device: str = "cpu"

    def judge(self) -> ec.Judge:
        """The judge of Table 1 (the audits' per-image verdicts)."""
        return ec.Judge(criterion=self.judge_criterion, positive_share=self.judge_share)

    @property
    def table1_recipe(self) -> str:
        """Name of the library recipe that defines Table 1: the first recipe, first method."""
        return self.recipes[0].label(self.methods[0])

    def data_key(self, shortcut: float | None = None) -> str:
        """A short hash of what determines the generated data (for the cache folder)."""
        d = self.data.model_dump(mode="json")
        if shortcut is not None:
            d["train_shortcut"] = shortcut
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def train_key(self) -> str:
        """A short hash of what determines training besides the data (checkpoint folder).

        The training settings, the device and ``knn_k`` (the validation classifier that
        decides when a model stops).
        """
        d = {
            "train": self.train.model_dump(mode="json"),
            "device": self.device,
            "knn_k": self.knn_k,
        }
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


PRESETS: dict[str, dict[str, Any]] = {
    # Runs end to end in about a minute: the test suite's configuration.
    "smoke": {
        "data": {
            "image_size": 32,
            "families": 2,
            "siblings": 2,
            "train_per_class": 24,
            "valid_per_class": 8,
            "test_per_class": 12,
        },
        "train": {
            "width": 0.125,
            "epochs": 2,
            "min_epochs": 1,
            "p": 4,
            "k": 4,
            "converged_accuracy": 0.0,
        },
        "bootstrap": 200,
        "figures": 3,
        "trust_images": 8,
        "trust_steps": 4,
    },
    # The main job: 64 px, width 0.25, 10 classes, 500 test images, under 10 minutes on 2 cores.
    # At least 20 epochs: the control learns the subtle glyph suddenly after a plateau of 5-10.
    "quick": {"train": {"min_epochs": 20}},
    # Three seeds of the quick preset: what claims about CAM differences rest on.
    "validity": {"seeds": [0, 1, 2], "train": {"min_epochs": 20}},
    # Real photos (your --data export) at the paper's 128 px with the CPU-sized CNN.
    "real": {"data": {"image_size": 128}, "train": {"epochs": 30, "min_epochs": 5, "patience": 4}},
    # The paper's protocol: 128 px, full widths (a GPU or a long CPU run).
    "paper": {
        "data": {
            "image_size": 128,
            "train_per_class": 400,
            "valid_per_class": 50,
            "test_per_class": 100,
        },
        "train": {"width": 1.0, "epochs": 40},
    },
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return text


def build_config(
    preset: str = "quick",
    file: Path | None = None,
    overrides: list[str] | None = None,
    **fields: Any,
) -> SkuConfig:
    """Preset, then a YAML/JSON file, then ``key.sub=value`` overrides, then keyword fields.

    Args:
        preset: One of `PRESETS`.
        file: A YAML or JSON file with any subset of the config fields.
        overrides: ``dotted.key=value`` strings (values parsed as YAML: ``seeds=[0,1]``).
        **fields: Top-level or nested fields (dicts) set last.

    Returns:
        The validated config.

    Raises:
        ConfigurationError: An unknown preset, an unreadable file, a malformed override or a
            field with the wrong type (the message names it).
    """
    if preset not in PRESETS:
        raise ConfigurationError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    raw: dict[str, Any] = _merge({"preset": preset}, PRESETS[preset])
    if file is not None:
        try:
            loaded = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ConfigurationError(
                f"config file {file} is not UTF-8 text (byte {err.start}); save it as UTF-8 "
                "YAML or JSON"
            ) from err
        except RecursionError as err:
            raise ConfigurationError(
                f"config file {file} is nested too deeply to read; a config is a flat mapping "
                "of fields (see benchmarks/sku.py --help)"
            ) from err
        except (OSError, yaml.YAMLError, ValueError) as err:
            detail = " ".join(str(err).split())
            raise ConfigurationError(f"cannot read config file {file}: {detail}") from err
        if not isinstance(loaded, dict):
            raise ConfigurationError(f"config file {file} must hold a mapping of fields")
        raw = _merge(raw, loaded)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigurationError(f"override {item!r} must look like key.sub=value")
        key, text = item.split("=", 1)
        node: dict[str, Any] = {}
        cur = node
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cur[part] = {}
            cur = cur[part]
        cur[parts[-1]] = _parse_value(text)
        raw = _merge(raw, node)
    raw = _merge(raw, fields)
    try:
        return SkuConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigurationError(f"invalid SKU benchmark config: {problems}") from err
