"""Embedding CAMs: the front door, its result, the native formulas and the method registry.

* [`EmbeddingCAM`][embedcam.cam.core.EmbeddingCAM] explains a batch of images and returns a
  [`CamResult`][embedcam.cam.result.CamResult].
* [`available_methods`][embedcam.cam.registry.available_methods] lists what each backend
  implements.
* A new native method is one function ``(acts, grads) -> raw`` on the ``(B, K, h, w)`` activations
  and gradients of the target layer, returning the signed ``(B, h, w)`` map, and one call to
  [`register_method`][embedcam.cam.registry.register_method]; after it the method works in
  ``EmbeddingCAM(method=...)``, [`Recipe`][embedcam.recipe.Recipe] and the command line:

```python
import embedcam as ec
from embedcam.cam import register_method

def positive_hirescam(acts, grads):
    return (grads * acts).clamp_min(0).sum(dim=1)

register_method("positive-hirescam", positive_hirescam)
res = ec.EmbeddingCAM(model, "layer4", method="positive-hirescam")(images, target)
```

* [`token_reshape`][embedcam.cam.reshape.token_reshape] and
  [`channels_last_reshape`][embedcam.cam.reshape.channels_last_reshape] turn ViT tokens and
  channels-last outputs into the ``(B, K, h, w)`` maps CAMs need (``reshape_transform=``).

``FORMULAS`` (native name -> formula) and ``BACKENDS`` (backend -> methods) remain importable as
live views of the registry; assigning ``FORMULAS[name] = fn`` still registers a method but is
deprecated in favour of ``register_method``.
"""

from embedcam.cam.core import EmbeddingCAM
from embedcam.cam.registry import (
    BACKENDS,
    FORMULAS,
    available_methods,
    check_method,
    register_method,
    unregister_method,
)
from embedcam.cam.reshape import channels_last_reshape, token_reshape
from embedcam.cam.result import CamResult, finish_maps, normalize_maps, upsample

__all__ = [
    "EmbeddingCAM",
    "CamResult",
    "available_methods",
    "check_method",
    "register_method",
    "unregister_method",
    "BACKENDS",
    "FORMULAS",
    "upsample",
    "normalize_maps",
    "finish_maps",
    "token_reshape",
    "channels_last_reshape",
]
