"""What names an explanation: `Recipe` (score, layer, method, backend, signed or ReLU'd)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from embedcam.errors import ConfigurationError, EmbedcamValueError
from embedcam.targets import CentroidTarget, ContrastiveTarget, EmbeddingTarget, ReferenceTarget

__all__ = ["Recipe", "TargetKind"]

#: The scores a recipe can explain.
TargetKind = Literal["centroid", "contrastive", "reference"]


class Recipe(BaseModel):
    """One way of explaining an embedding model; the unit that every dataset-level table names.

    A recipe fixes everything that changes a map: the score explained (``target``), the layer
    whose output is explained, the CAM method and backend, and whether maps are scored signed or
    after the ReLU. Recipes are immutable and hashable, so they serve as dictionary keys.

    Targets:

    * ``"centroid"``: cosine of the image's embedding to its true-class centroid (the paper's
      recipe, Volnova & Suschinskiy 2026).
    * ``"contrastive"``: that cosine minus the cosine to the nearest other class centroid: what
      separates the image from its closest rival class.
    * ``"reference"``: cosine to a reference embedding given per image (e.g. a gallery image in
      retrieval) or one shared reference vector.

    ``signed=True`` scores the absolute value of the signed map (evidence for and against the
    target). After the ReLU, evidence *against* the class disappears: on a foreign background a
    background-reliant model then looks object-focused. Signed maps keep that evidence visible.

    Attributes:
        layer: Dotted name of the explained module (``"layer4"``, ``"features.block4.relu"``).
        target: ``"centroid"``, ``"contrastive"`` or ``"reference"``.
        method: CAM method (see [`available_methods`][embedcam.cam.registry.available_methods];
            methods added with [`register_method`][embedcam.cam.registry.register_method] count).
        backend: ``"native"``, ``"grad-cam"`` or ``"captum"``.
        signed: Score ``|signed map|`` instead of the ReLU'd map.
        name: Short name for tables and file names; defaults to
            ``"{target}/{layer}/{method}"`` plus ``"/signed"``.

    Raises:
        ConfigurationError: A field with a bad value or an unknown field (the message names
            it), or a module passed as ``layer`` instead of its name.

    Examples:
        >>> r = Recipe(layer="layer4", target="contrastive", method="gradcam++", signed=True)
        >>> r.name, r.negatives
        ('contrastive/layer4/gradcam++/signed', 'abs')
        >>> Recipe.parse("layer=layer3,method=hirescam").name
        'centroid/layer3/hirescam'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: str = Field(min_length=1)
    target: TargetKind = "centroid"
    method: str = "gradcam"
    backend: str = "native"
    signed: bool = False
    name: str = ""

    def __init__(self, **fields: Any) -> None:
        layer = fields.get("layer")
        if layer is not None and not isinstance(layer, str):
            hint = (
                "the module's dotted name, e.g. 'layer4' or model.cam_layer_name, not the module"
                if hasattr(layer, "named_modules")
                else "a dotted module name such as 'layer4'"
            )
            raise ConfigurationError(f"Recipe(layer={layer!r}): layer must be {hint}")
        try:
            super().__init__(**fields)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'recipe'}: {e['msg']}"
                for e in err.errors()
            )
            raise ConfigurationError(f"invalid recipe {fields!r}: {problems}") from None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if any(ch in value for ch in "\n\r\t"):
            raise ValueError("a recipe name must be one line")
        return value

    def model_post_init(self, __context: Any) -> None:
        """Fill in the default name."""
        if not self.name:
            parts = [self.target, self.layer, self.method] + (["signed"] if self.signed else [])
            object.__setattr__(self, "name", "/".join(parts))

    @property
    def negatives(self) -> Literal["clamp", "abs"]:
        """How scores treat negative map values: ``"abs"`` for signed recipes, else ``"clamp"``."""
        return "abs" if self.signed else "clamp"

    @classmethod
    def parse(cls, text: str, **defaults: Any) -> Recipe:
        """Build a recipe from ``key=value`` pairs separated by commas (the command-line form).

        Args:
            text: e.g. ``"target=contrastive,layer=layer3,method=gradcam++,signed=true"``.
            **defaults: Fields used where ``text`` is silent (e.g. ``layer=`` from ``--layer``).

        Returns:
            The recipe.

        Raises:
            ConfigurationError: ``text`` is not a string, a malformed pair, an unknown field or a
                bad value (the message names it).
        """
        if not isinstance(text, str):
            raise ConfigurationError(
                f"Recipe.parse needs a string of key=value pairs, got {type(text).__name__}; "
                "e.g. 'layer=layer4,method=gradcam++' (build from a dict with Recipe(**fields))"
            )
        fields: dict[str, Any] = dict(defaults)
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            if "=" not in item:
                raise ConfigurationError(
                    f"recipe part {item!r} in {text!r} must look like key=value, e.g. "
                    "'target=contrastive,method=gradcam++,signed=true'"
                )
            key, value = (s.strip() for s in item.split("=", 1))
            if key == "signed":
                low = value.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ConfigurationError(f"recipe {text!r}: signed must be true or false")
                fields[key] = low in ("true", "1", "yes")
            else:
                fields[key] = value
        return cls.build(**fields)

    @classmethod
    def build(cls, **fields: Any) -> Recipe:
        """Validate ``fields`` into a recipe, raising `ConfigurationError` on bad input.

        Args:
            **fields: The recipe's fields.

        Returns:
            The recipe.

        Raises:
            ConfigurationError: The message names every bad field.
        """
        return cls(**fields)

    def check(self) -> None:
        """Check that the method exists on the backend (before any work is done).

        Construction does not check the method, so that recipes saved with a method registered
        in another process still load; this check sees every method registered so far.

        Raises:
            ConfigurationError: Unknown backend or method.
            UnsupportedError: The backend does not implement the method.
        """
        from embedcam.cam.registry import check_method

        check_method(self.method, self.backend)

    def make_target(self, centroids: Any, labels: Any, references: Any = None) -> EmbeddingTarget:
        """The target of this recipe for one batch.

        Args:
            centroids: ``(C, D)`` class centroids (for ``"centroid"`` and ``"contrastive"``).
            labels: ``(B,)`` true class per image.
            references: ``(B, D)`` or ``(D,)`` reference embeddings (for ``"reference"``).

        Returns:
            The `EmbeddingTarget` to explain.

        Raises:
            EmbedcamValueError: A centroid recipe without centroids, or a reference recipe
                without references.
        """
        if self.target == "reference":
            if references is None:
                raise EmbedcamValueError(
                    f"recipe {self.name!r} explains a reference similarity but no reference "
                    "embeddings were given; pass references= (one (D,) vector or one per image) "
                    "or give batches a 'reference' key"
                )
            return ReferenceTarget(references)
        if centroids is None:
            raise EmbedcamValueError(
                f"recipe {self.name!r} needs class centroids; pass centroids= (e.g. "
                "ClassCentroids.fit(model, train_loader))"
            )
        if self.target == "centroid":
            return CentroidTarget(centroids, labels)
        return ContrastiveTarget(centroids, labels)

    def cam(
        self,
        model: Any,
        *,
        embedding_fn: Callable[[Any], Any] | None = None,
        reshape_transform: Callable[[Any], Any] | None = None,
    ) -> Any:
        """An `EmbeddingCAM` of ``model`` for this recipe.

        Args:
            model: The embedding model.
            embedding_fn: Picks the embedding from a tuple/dict model output.
            reshape_transform: Maps token outputs to ``(B, K, h, w)`` (ViT).

        Returns:
            The configured `EmbeddingCAM`.
        """
        from embedcam.cam import EmbeddingCAM

        return EmbeddingCAM(
            model,
            self.layer,
            method=self.method,
            backend=self.backend,
            embedding_fn=embedding_fn,
            reshape_transform=reshape_transform,
        )
