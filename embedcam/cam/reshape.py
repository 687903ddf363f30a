"""Reshape transforms: token and channels-last layer outputs as ``(B, K, h, w)`` feature maps.

CAMs and point-to-point maps need the target layer's output as a ``(B, K, h, w)`` map. Two common
layer outputs are not:

* a vision transformer block outputs tokens ``(B, P + N, K)``: ``P`` prefix tokens (the class
  token; DeiT's distillation token; register tokens) and ``N = h * w`` patch tokens in row-major
  order. [`token_reshape`][embedcam.cam.reshape.token_reshape] drops the prefix and folds the
  patches back into the grid.
* Swin (timm) and other channels-last stages output ``(B, h, w, K)``:
  [`channels_last_reshape`][embedcam.cam.reshape.channels_last_reshape] moves the channels first.

Where to hook a ViT: the first LayerNorm of the last block (torchvision
``VisionTransformer``: ``model.encoder.layers[-1].ln_1``; timm: ``model.blocks[-1].norm1``, with
``num_prefix_tokens=model.num_prefix_tokens``). Its output feeds the last attention, through
which the class token reads every patch, so the patches' gradients carry the explanation. After
the last block (the final norm) only the class token still reaches a class-token embedding:
the patch tokens' gradients are zero and every map would be empty.

Both return small picklable objects (they travel to worker processes with a recipe) with a
readable ``repr``.

Examples:
    >>> import torch
    >>> tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    >>> token_reshape()(tokens).shape          # 1 class token + 2 x 2 patches of width 3
    torch.Size([2, 3, 2, 2])
    >>> channels_last_reshape()(torch.zeros(2, 7, 7, 96)).shape
    torch.Size([2, 96, 7, 7])
"""

from __future__ import annotations

import math

from torch import Tensor

from embedcam.errors import ConfigurationError, ShapeError

__all__ = ["token_reshape", "channels_last_reshape", "TokenReshape", "ChannelsLastReshape"]


class TokenReshape:
    """``(B, P + N, K)`` tokens -> ``(B, K, h, w)``.

    Made by [`token_reshape`][embedcam.cam.reshape.token_reshape], which documents the arguments.
    """

    def __init__(self, num_prefix_tokens: int = 1, grid: tuple[int, int] | None = None) -> None:
        if (
            not isinstance(num_prefix_tokens, int)
            or isinstance(num_prefix_tokens, bool)
            or num_prefix_tokens < 0
        ):
            raise ConfigurationError(
                f"num_prefix_tokens must be an int >= 0, got {num_prefix_tokens!r} (1 for a class "
                "token, 2 for DeiT's class and distillation tokens, 1 + registers)"
            )
        if grid is not None:
            ok = (
                isinstance(grid, (tuple, list))
                and len(grid) == 2
                and all(isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in grid)
            )
            if not ok:
                raise ConfigurationError(
                    f"grid must be (h, w) with two positive ints, got {grid!r}"
                )
            grid = (int(grid[0]), int(grid[1]))
        self.num_prefix_tokens = num_prefix_tokens
        self.grid = grid

    def __repr__(self) -> str:
        return f"token_reshape(num_prefix_tokens={self.num_prefix_tokens}, grid={self.grid})"

    def __call__(self, tokens: Tensor) -> Tensor:
        """Fold ``(B, P + N, K)`` tokens into ``(B, K, h, w)``.

        Args:
            tokens: the layer output.

        Returns:
            The patch tokens as a ``(B, K, h, w)`` map (a view where possible).

        Raises:
            ShapeError: the input is not 3-D, or its patch count does not fit the grid.
        """
        if not isinstance(tokens, Tensor) or tokens.dim() != 3:
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ShapeError(
                f"token_reshape expects (B, tokens, K) ViT tokens, got {shape}; a (B, h, w, K) "
                "output (Swin) wants channels_last_reshape(), a (B, K, h, w) one no transform"
            )
        b, total, k = tokens.shape
        n = total - self.num_prefix_tokens
        if n <= 0:
            raise ShapeError(
                f"the layer outputs {total} tokens, not more than num_prefix_tokens="
                f"{self.num_prefix_tokens}; check num_prefix_tokens"
            )
        if self.grid is None:
            side = math.isqrt(n)
            if side * side != n:
                raise ShapeError(
                    f"{total} tokens minus {self.num_prefix_tokens} prefix token(s) leave {n} "
                    "patch tokens, not a square grid; pass grid=(h, w) (a non-square image), or "
                    "fix num_prefix_tokens (register tokens count too)"
                )
            h = w = side
        else:
            h, w = self.grid
            if h * w != n:
                raise ShapeError(
                    f"grid={self.grid} holds {h * w} patches but the layer outputs {n} patch "
                    f"tokens ({total} minus {self.num_prefix_tokens} prefix)"
                )
        return tokens[:, self.num_prefix_tokens :, :].reshape(b, h, w, k).permute(0, 3, 1, 2)


class ChannelsLastReshape:
    """``(B, h, w, K)`` -> ``(B, K, h, w)``.

    Made by [`channels_last_reshape`][embedcam.cam.reshape.channels_last_reshape].
    """

    def __repr__(self) -> str:
        return "channels_last_reshape()"

    def __call__(self, x: Tensor) -> Tensor:
        """Move the channels of a ``(B, h, w, K)`` output first.

        Args:
            x: the layer output.

        Returns:
            ``(B, K, h, w)`` (a view).

        Raises:
            ShapeError: the input is not 4-D.
        """
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(
                f"channels_last_reshape expects a (B, h, w, K) output, got {shape}; ViT tokens "
                "(B, N, K) want token_reshape()"
            )
        return x.permute(0, 3, 1, 2)


def token_reshape(num_prefix_tokens: int = 1, grid: tuple[int, int] | None = None) -> TokenReshape:
    """A ``reshape_transform`` for vision-transformer tokens.

    Drops the first ``num_prefix_tokens`` tokens and folds the remaining ``N = h * w`` patch tokens
    (row-major) into a ``(B, K, h, w)`` map.

    Args:
        num_prefix_tokens: tokens before the patches: 1 (a class token: torchvision and most timm
            ViTs; timm has ``model.num_prefix_tokens``), 2 (DeiT distilled), ``1 + r`` with ``r``
            register tokens, 0 (no class token, e.g. ``class_token=False``).
        grid: ``(h, w)`` of the patch grid; ``None`` infers a square grid (a non-square input
            needs it: 224 x 448 px with 16 px patches is ``(14, 28)``).

    Returns:
        The transform, for ``EmbeddingCAM(..., reshape_transform=...)`` or
        [`point_to_point`][embedcam.pairs.point_to_point].

    Raises:
        ConfigurationError: ``num_prefix_tokens`` or ``grid`` is not valid (when the transform is
            made, not when it runs).

    Examples:
        >>> import torch
        >>> tokens = torch.zeros(1, 1 + 2 * 3, 8)
        >>> tokens[0, 1 + 4] = 1.0                 # patch 4: row 1, column 1
        >>> fmap = token_reshape(grid=(2, 3))(tokens)
        >>> fmap.shape, fmap[0, 0].tolist()
        (torch.Size([1, 8, 2, 3]), [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    """
    return TokenReshape(num_prefix_tokens, grid)


def channels_last_reshape() -> ChannelsLastReshape:
    """A ``reshape_transform`` for channels-last layer outputs ``(B, h, w, K)`` (timm Swin).

    Returns:
        The transform, mapping ``(B, h, w, K)`` to ``(B, K, h, w)``.

    Examples:
        >>> import torch
        >>> x = torch.zeros(1, 2, 3, 4)
        >>> x[0, 1, 2, 3] = 1.0
        >>> channels_last_reshape()(x)[0, 3, 1, 2].item()
        1.0
    """
    return ChannelsLastReshape()
