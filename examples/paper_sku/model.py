"""The paper's reference CNN (Volnova & Suschinskiy, IRJ 2026, DOI 10.60797/IRJ.2026.167.89).

The paper states: 128x128 RGB input, five convolutional blocks with 64, 64, 128, 256 and 512
filters, two fully connected layers of 256 and 128 units, and an L2-normalised 128-d output.

Choices where the paper is silent (and why):

- **Block** = ``Conv2d(3x3, padding=1, bias=False) -> BatchNorm2d -> ReLU -> MaxPool2d(2)``.
  3x3 kernels and batch normalisation are the default of small VGG-style CNNs; the convolution
  has no bias because BatchNorm's shift makes it redundant. Max pooling halves the resolution
  after every block, so a 128 px input reaches the last block at 8x8 and is flattened at 4x4.
- **Flatten, not global pooling**, before the first FC layer: the paper speaks of fully connected
  layers after the convolutions; flattening keeps the position of evidence (objects and
  backgrounds sit in different places), which is what makes background shortcuts learnable -
  the phenomenon the paper studies. The flattened size follows from ``in_size``.
- **Head** = ``Linear(flat, 256) -> ReLU -> Linear(256, embedding_dim)``, then L2 normalisation.
- **Width multiplier** ``width`` scales the filter counts (``max(1, round(c * width))``). This is
  a *deviation from the paper* for fast CPU presets: width 0.25 at 64 px trains a useful model
  on two CPU cores in about a minute (measured: 43-61 s per model at 64 px on two cores).
  ``width=1.0`` is the paper's model.
- **CAM layer**: the paper runs Grad-CAM on "the last convolutional layer". Here that is the ReLU
  of the last block, *before* its pooling (``features.block4.relu``): the finest map the last
  block produces (8x8 at 128 px, 4x4 at 64 px). Every block's ReLU is addressable by dotted name
  (``features.block0.relu`` ... ``features.block4.relu``) so "the block before last" can be
  explained too.

Examples:
    >>> import torch
    >>> from paper_sku.model import PaperCNN
    >>> model = PaperCNN(width=0.25, in_size=64)
    >>> model(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 128])
    >>> model.cam_layer_name
    'features.block4.relu'
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from embedcam.errors import ConfigurationError, ShapeError

__all__ = ["PAPER_FILTERS", "ConvBlock", "PaperCNN"]

#: Filter counts of the five convolutional blocks in the paper.
PAPER_FILTERS: tuple[int, ...] = (64, 64, 128, 256, 512)


class ConvBlock(nn.Module):
    """One convolutional block: 3x3 convolution, BatchNorm, ReLU, 2x2 max pooling.

    The ReLU is its own module (``relu``) so that CAM tools can hook its output, the block's
    activation before down-sampling.

    Args:
        in_channels: Input channels.
        out_channels: Filters of the 3x3 convolution.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        # inplace=False: an in-place ReLU would overwrite the tensor a CAM hook keeps.
        self.relu = nn.ReLU(inplace=False)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: ``(B, C_in, H, W)`` input.

        Returns:
            ``(B, C_out, H // 2, W // 2)`` pooled activation.
        """
        return self.pool(self.relu(self.bn(self.conv(x))))


class PaperCNN(nn.Module):
    """The paper's embedding CNN: five conv blocks, FC 256 -> ReLU -> FC 128, L2-normalised.

    Args:
        embedding_dim: Size of the output embedding (128 in the paper).
        width: Multiplier of the filter counts 64, 64, 128, 256, 512 (1.0 in the paper; values
            below 1 are a documented deviation for fast CPU presets).
        in_size: Input image size, an int for square images or ``(H, W)``; at least 32 in each
            dimension because five 2x2 poolings must leave at least one pixel.
        in_channels: Input channels (3 for RGB).
        hidden_dim: Units of the first fully connected layer (256 in the paper).

    Raises:
        ConfigurationError: If a size or the width is not positive, or ``in_size`` is below 32.

    Attributes:
        features: ``nn.Sequential`` of the blocks ``block0`` ... ``block4``.
        head: ``nn.Sequential``: flatten, ``fc1``, ``relu``, ``fc2``.
        in_size: ``(H, W)`` the model accepts.
        channels: Filter count of each block after the width multiplier.
    """

    def __init__(
        self,
        embedding_dim: int = 128,
        width: float = 1.0,
        in_size: int | tuple[int, int] = 128,
        in_channels: int = 3,
        hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        if not width > 0:
            raise ConfigurationError(f"width must be > 0, got {width}; use 1.0 for the paper")
        for name, value in (
            ("embedding_dim", embedding_dim),
            ("in_channels", in_channels),
            ("hidden_dim", hidden_dim),
        ):
            if int(value) != value or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        size = (in_size, in_size) if isinstance(in_size, int) else tuple(in_size)
        if len(size) != 2 or min(size) < 32:
            raise ConfigurationError(
                f"in_size must be >= 32 in each dimension (five 2x2 poolings), got {in_size!r}"
            )
        self.in_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.in_channels = int(in_channels)
        self.embedding_dim = int(embedding_dim)
        self.width = float(width)
        self.channels: tuple[int, ...] = tuple(max(1, round(c * width)) for c in PAPER_FILTERS)

        blocks: list[tuple[str, nn.Module]] = []
        prev = in_channels
        for i, ch in enumerate(self.channels):
            blocks.append((f"block{i}", ConvBlock(prev, ch)))
            prev = ch
        self.features = nn.Sequential(OrderedDict(blocks))

        # Five floor-halvings, exactly as MaxPool2d(2) computes them.
        h, w = self.in_size
        for _ in PAPER_FILTERS:
            h, w = h // 2, w // 2
        self.head = nn.Sequential()
        self.head.add_module("flatten", nn.Flatten())
        self.head.add_module("fc1", nn.Linear(prev * h * w, hidden_dim))
        self.head.add_module("relu", nn.ReLU(inplace=False))
        self.head.add_module("fc2", nn.Linear(hidden_dim, embedding_dim))

    @property
    def block_layer_names(self) -> tuple[str, ...]:
        """Dotted names of every block's ReLU, first to last (``features.block0.relu`` ...)."""
        return tuple(f"features.block{i}.relu" for i in range(len(self.channels)))

    @property
    def block_layers(self) -> tuple[nn.Module, ...]:
        """Every block's ReLU module (the activation before pooling), first to last."""
        return tuple(self.get_submodule(name) for name in self.block_layer_names)

    @property
    def cam_layer_name(self) -> str:
        """Dotted name of the CAM layer: ``"features.block4.relu"``.

        See [`cam_layer`][paper_sku.model.PaperCNN.cam_layer].
        """
        return self.block_layer_names[-1]

    @property
    def cam_layer(self) -> nn.Module:
        """The last conv block's ReLU, before its pooling: the paper's Grad-CAM layer.

        Its output is ``(B, channels[-1], H / 16, W / 16)`` (8x8 at 128 px). Use it as
        ``EmbeddingCAM(model, model.cam_layer, ...)``.
        """
        return self.block_layers[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch of images.

        Args:
            x: ``(B, in_channels, H, W)`` images with ``(H, W) == in_size``.

        Returns:
            ``(B, embedding_dim)`` L2-normalised embeddings.

        Raises:
            ShapeError: If ``x`` is not 4-D or its channels or size differ from the model's.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.in_size:
            raise ShapeError(
                f"PaperCNN expects images (B, {self.in_channels}, {self.in_size[0]}, "
                f"{self.in_size[1]}), got {tuple(x.shape)}; resize the images or build the "
                f"model with in_size={tuple(x.shape[2:]) if x.ndim == 4 else '...'}"
            )
        z = self.head(self.features(x))
        return F.normalize(z, p=2.0, dim=1)
