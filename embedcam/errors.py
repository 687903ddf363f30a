"""The embedcam error hierarchy.

Every error raised on bad input derives from [`EmbedcamError`][embedcam.errors.EmbedcamError], so
users can catch one type. Each subclass also derives from the closest built-in exception
(``ValueError``, ``TypeError``, ...) so that generic ``except ValueError`` code keeps working.

Messages follow one rule: say what was wrong (with the offending value, index, name or path) and
what to do about it.

Examples:
    >>> import embedcam as ec
    >>> try:
    ...     raise ec.errors.ShapeError("maps must be (B, H, W), got (3, 4); add a batch dimension")
    ... except ec.errors.EmbedcamError as err:
    ...     print(type(err).__name__)
    ShapeError
"""

from __future__ import annotations

__all__ = [
    "EmbedcamError",
    "ShapeError",
    "EmbedcamValueError",
    "ConfigurationError",
    "DataError",
    "UnsupportedError",
]


class EmbedcamError(Exception):
    """Base class of every error embedcam raises on bad input or an unsupported request."""


class ShapeError(EmbedcamError, ValueError):
    """A tensor or array has the wrong shape, rank or a size that does not match another input.

    Example: maps of shape ``(B, H, W)`` with regions of a different ``H``, or a target whose
    number of labels differs from the batch size.
    """


class EmbedcamValueError(EmbedcamError, ValueError):
    """A value is invalid.

    Examples: NaN or zero-norm embeddings, a label outside ``[0, C)``, a box with ``x1 <= x0``, a
    threshold outside its range.
    """


class ConfigurationError(EmbedcamError, ValueError):
    """An option or combination of options is invalid.

    Examples: an unknown method or backend, a layer name that is not in the model, a model output
    that needs an ``embedding_fn``, a config field of the wrong type.
    """


class DataError(EmbedcamError, ValueError):
    """A dataset, file or export is missing, corrupt or inconsistent.

    Examples: an unreadable image (the message names the path), a missing annotation file, a class
    with no samples, boxes asked of a classification export.
    """


class UnsupportedError(ConfigurationError, NotImplementedError):
    """A valid request that the chosen backend cannot serve, e.g. Grad-CAM++ with Captum.

    The message names the backends that do support the request.
    """
