"""The method registry: which CAM methods each backend implements, and how to add one.

A native method is one function ``(acts, grads) -> raw`` on the target layer's activations and
gradients, both ``(B, K, h, w)``, returning the signed ``(B, h, w)`` map before the ReLU (see
[`embedcam.cam.weights`][embedcam.cam.weights] for the built-in ones). One call to
[`register_method`][embedcam.cam.registry.register_method] makes a new one available everywhere a
method name is accepted: [`available_methods`][embedcam.cam.registry.available_methods],
[`check_method`][embedcam.cam.registry.check_method],
[`Recipe.check`][embedcam.recipe.Recipe.check] and
[`EmbeddingCAM`][embedcam.cam.core.EmbeddingCAM].

The ``grad-cam`` and ``captum`` backends implement the methods of their libraries; the registry
extends the native backend only.

Examples:
    >>> import torch
    >>> from embedcam.cam import available_methods, register_method, unregister_method
    >>> def activation_sum(acts, grads):  # ignores the gradient: a plain activation map
    ...     return acts.sum(dim=1)
    >>> register_method("activation-sum", activation_sum)
    >>> "activation-sum" in available_methods("native")
    True
    >>> unregister_method("activation-sum")
"""

from __future__ import annotations

import inspect
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping

from torch import Tensor

from embedcam.cam import adapters, weights
from embedcam.errors import ConfigurationError, UnsupportedError

__all__ = [
    "Formula",
    "register_method",
    "unregister_method",
    "native_formula",
    "available_methods",
    "check_method",
    "FORMULAS",
    "BACKENDS",
]

#: A native CAM method: ``(acts, grads) -> raw``, ``(B, K, h, w)`` twice to ``(B, h, w)``.
Formula = Callable[[Tensor, Tensor], Tensor]

_BUILTIN: dict[str, Formula] = {
    "gradcam": weights.gradcam,
    "gradcam++": weights.gradcam_pp,
    "hirescam": weights.hirescam,
    "xgradcam": weights.xgradcam,
    "layercam": weights.layercam,
}
_NATIVE: dict[str, Formula] = dict(_BUILTIN)
_LOCK = threading.Lock()
# Lower case, no separators of Recipe.parse (",", "=") or of recipe names and paths ("/").
_NAME = re.compile(r"[a-z0-9][a-z0-9_+.\-]*")


def _other_backends() -> dict[str, tuple[str, ...]]:
    return {"grad-cam": tuple(adapters.GRADCAM_CLASSES), "captum": tuple(adapters.CAPTUM_CLASSES)}


def _check_formula(name: str, fn: object) -> None:
    if not callable(fn):
        raise ConfigurationError(
            f"register_method({name!r}, ...): fn must be a callable (acts, grads) -> raw, got "
            f"{type(fn).__name__}"
        )
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: accept them
        return
    try:
        sig.bind(None, None)
    except TypeError:
        raise ConfigurationError(
            f"register_method({name!r}, ...): fn{sig} cannot be called as fn(acts, grads); a CAM "
            "method takes the (B, K, h, w) activations and gradients and returns the (B, h, w) "
            "signed map"
        ) from None


def register_method(name: str, fn: Formula, *, overwrite: bool = False) -> None:
    """Make ``fn`` available as the native CAM method ``name``.

    After this call ``EmbeddingCAM(model, layer, method=name)`` computes ``fn(acts, grads)`` on
    the target layer's float32 activations and gradients (both ``(B, K, h, w)``, on the model's
    device) and post-processes the signed ``(B, h, w)`` result like every other method (ReLU,
    bilinear upsampling, per-image min-max, ``empty`` flag). A CAM built before the call keeps the
    formula it was built with.

    Args:
        name: Method name: lower case letters, digits and ``_ + . -``, starting with a letter or
            digit (it appears in recipe names and on the command line).
        fn: The formula, ``fn(acts, grads) -> raw``.
        overwrite: Replace an existing native method of that name, or implement natively a
            method that only another backend has (e.g. ``"scorecam"``). Without it both raise.

    Raises:
        ConfigurationError: ``name`` is not a valid method name, is already a native method, or
            is another backend's method (without ``overwrite``); ``fn`` is not callable with two
            positional arguments.

    Examples:
        >>> from embedcam.cam import register_method, unregister_method
        >>> register_method("gradcam", lambda a, g: a.sum(1))
        Traceback (most recent call last):
        ...
        embedcam.errors.ConfigurationError: CAM method 'gradcam' is already registered ...
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"a CAM method name must be a non-empty lower-case string of letters, digits and "
            f"'_+.-' (e.g. 'my-cam'), got {name!r}"
        )
    _check_formula(name, fn)
    with _LOCK:
        if not overwrite:
            if name in _NATIVE:
                raise ConfigurationError(
                    f"CAM method {name!r} is already registered (as "
                    f"{getattr(_NATIVE[name], '__qualname__', _NATIVE[name])!r}); pick another "
                    "name, or pass overwrite=True to replace it"
                )
            owners = [b for b, ms in _other_backends().items() if name in ms]
            if owners:
                raise ConfigurationError(
                    f"CAM method {name!r} is already a method of backend "
                    f"{' and '.join(repr(b) for b in owners)}; pick another name, or pass "
                    "overwrite=True to implement it on the native backend as well"
                )
        _NATIVE[name] = fn


def unregister_method(name: str) -> None:
    """Remove a native method added with [`register_method`][embedcam.cam.registry.register_method].

    A built-in method that was overwritten gets its built-in formula back; a built-in method
    itself cannot be removed.

    Args:
        name: The method name.

    Raises:
        ConfigurationError: ``name`` is not a registered native method, or is a built-in one that
            was not overwritten.
    """
    with _LOCK:
        if name not in _NATIVE:
            raise ConfigurationError(
                f"{name!r} is not a native CAM method; registered ones are {list(_NATIVE)}"
            )
        if name in _BUILTIN:
            if _NATIVE[name] is _BUILTIN[name]:
                raise ConfigurationError(
                    f"{name!r} is a built-in CAM method and cannot be removed; overwrite it with "
                    "register_method(name, fn, overwrite=True) instead"
                )
            _NATIVE[name] = _BUILTIN[name]
        else:
            del _NATIVE[name]


def native_formula(name: str) -> Formula:
    """The native formula registered as ``name``.

    Args:
        name: A native method name.

    Returns:
        The function ``(acts, grads) -> raw``.

    Raises:
        ConfigurationError: ``name`` is not a native method (the message names the backends that
            implement it, if any).
    """
    with _LOCK:
        fn = _NATIVE.get(name)
    if fn is None:
        check_method(name, "native")
        raise ConfigurationError(f"{name!r} is not a native CAM method")  # pragma: no cover
    return fn


def _backends() -> dict[str, tuple[str, ...]]:
    with _LOCK:
        native = tuple(_NATIVE)
    return {"native": native, **_other_backends()}


def available_methods(backend: str = "native") -> list[str]:
    """The CAM methods a backend implements, including methods registered natively.

    Args:
        backend: ``"native"``, ``"grad-cam"`` (pytorch-grad-cam) or ``"captum"``.

    Returns:
        Method names accepted by [`EmbeddingCAM`][embedcam.cam.core.EmbeddingCAM] with that
        backend, built-in ones first, then registered ones in registration order.

    Raises:
        ConfigurationError: unknown backend.

    Examples:
        >>> available_methods("captum")
        ['gradcam', 'hirescam']
    """
    backends = _backends()
    if backend not in backends:
        raise ConfigurationError(f"unknown backend {backend!r}; choose one of {sorted(backends)}")
    return list(backends[backend])


def check_method(method: str, backend: str) -> None:
    """Check that ``backend`` implements ``method``.

    Args:
        method: A CAM method name.
        backend: A backend name.

    Raises:
        ConfigurationError: Unknown backend or method.
        UnsupportedError: The backend does not implement the method (the message names the
            backends that do).
    """
    methods = available_methods(backend)
    if method not in methods:
        backends = _backends()
        known = sorted({m for ms in backends.values() for m in ms})
        if method not in known:
            raise ConfigurationError(
                f"unknown CAM method {method!r}; choose one of {known}, or add a native one with "
                "embedcam.cam.register_method"
            )
        others = [b for b, ms in backends.items() if method in ms]
        raise UnsupportedError(
            f"backend {backend!r} does not implement {method!r}; use backend "
            f"{' or '.join(repr(b) for b in others)}, or one of its methods {methods}"
        )


class _FormulaView(MutableMapping[str, Formula]):
    """``FORMULAS``: the native registry as a mapping (writes go through the registry)."""

    def __getitem__(self, name: str) -> Formula:
        with _LOCK:
            return _NATIVE[name]

    def __iter__(self) -> Iterator[str]:
        with _LOCK:
            return iter(list(_NATIVE))

    def __len__(self) -> int:
        return len(_NATIVE)

    def __setitem__(self, name: str, fn: Formula) -> None:
        warnings.warn(
            "FORMULAS[name] = fn is deprecated; use embedcam.cam.register_method(name, fn, "
            "overwrite=True)",
            DeprecationWarning,
            stacklevel=2,
        )
        register_method(name, fn, overwrite=True)

    def __delitem__(self, name: str) -> None:
        warnings.warn(
            "del FORMULAS[name] is deprecated; use embedcam.cam.unregister_method(name)",
            DeprecationWarning,
            stacklevel=2,
        )
        if name not in _NATIVE:
            raise KeyError(name)
        unregister_method(name)

    def __repr__(self) -> str:
        return f"FORMULAS({list(self)})"


class _BackendsView(Mapping[str, tuple[str, ...]]):
    """``BACKENDS``: backend -> the methods it implements now (read-only)."""

    def __getitem__(self, backend: str) -> tuple[str, ...]:
        return _backends()[backend]

    def __iter__(self) -> Iterator[str]:
        return iter(_backends())

    def __len__(self) -> int:
        return len(_backends())

    def __repr__(self) -> str:
        return f"BACKENDS({_backends()})"


#: Native method name -> formula: a live view of the registry. Reading works as with the dict it
#: replaces; assigning an item registers the method (deprecated: use ``register_method``).
FORMULAS: MutableMapping[str, Formula] = _FormulaView()

#: Backend -> the methods it implements: a live, read-only view (``available_methods`` as a map).
BACKENDS: Mapping[str, tuple[str, ...]] = _BackendsView()
