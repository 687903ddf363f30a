"""P x K batch sampling: P classes, K images of each, so that every batch has triplets.

Semi-hard mining needs positives and negatives in every batch (FaceNet, Schroff et al. 2015; the
P x K scheme of Hermans et al., *In Defense of the Triplet Loss*, 2017).

Choices:

- **Classes** are visited in shuffled rounds: every class appears once per round, so rare classes
  are seen as often as frequent ones (class-balanced, not image-balanced). A batch never holds a
  class twice.
- **Images** of a class are drawn without replacement when it has at least K, otherwise all of its
  images plus draws with replacement to fill K (class imbalance: a class with 3 images still gives
  K = 8 samples, and a one-image class gives a zero-distance positive pair, which is harmless).
- **Groups**: with ``groups`` (a class -> additional-label group, e.g. its category), batches take
  classes round-robin over shuffled groups, so small groups are not crowded out by big ones.
- **Determinism**: the draws of epoch ``e`` depend only on ``(seed, e)`` (a private generator; the
  global RNG is untouched), so the state to save for an exact resume is just the epoch. Call
  [`PKSampler.set_epoch`][paper_sku.sampler.PKSampler.set_epoch] before each epoch, as with
  ``DistributedSampler``.

Examples:
    >>> from paper_sku.sampler import PKSampler
    >>> sampler = PKSampler([0, 0, 0, 1, 1, 2, 2, 2], p=2, k=2, seed=0)
    >>> batches = list(sampler)
    >>> len(batches), [len(b) for b in batches]
    (2, [4, 4])
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from embedcam.errors import ConfigurationError, DataError, EmbedcamValueError

__all__ = ["PKSampler"]


class PKSampler(Sampler[list[int]]):
    """Batch sampler yielding ``P * K`` dataset indices per batch (``K`` for each of ``P`` classes).

    Use it as ``DataLoader(dataset, batch_sampler=PKSampler(labels, p, k))``.

    Args:
        labels: ``(N,)`` integer class label of every dataset item.
        p: Classes per batch (>= 2, at most the number of classes).
        k: Images per class (>= 2).
        num_batches: Batches per epoch; default ``max(1, N // (p * k))``.
        groups: Optional class -> group mapping (a dict, or a sequence indexed by class id) to
            balance batches over additional-label groups. Every class in ``labels`` needs a group.
        seed: Seed of the sampler's private generator.

    Raises:
        DataError: If ``labels`` is empty.
        EmbedcamValueError: If labels are negative or a class has no group.
        ConfigurationError: If ``p``, ``k`` or ``num_batches`` is invalid.
    """

    def __init__(
        self,
        labels: Sequence[int] | torch.Tensor | np.ndarray,
        p: int,
        k: int,
        num_batches: int | None = None,
        groups: Mapping[int, Hashable] | Sequence[Hashable] | None = None,
        seed: int = 0,
    ) -> None:
        lab = torch.as_tensor(np.asarray(labels)).flatten()
        if lab.numel() == 0:
            raise DataError("PKSampler got no labels; the dataset is empty")
        if lab.is_floating_point() or bool((lab < 0).any()):
            raise EmbedcamValueError(
                f"labels must be integer class ids >= 0, got dtype {lab.dtype}, min {lab.min()}"
            )
        self.classes: list[int] = sorted(set(lab.tolist()))
        if not (isinstance(p, int) and p >= 2):
            raise ConfigurationError(f"p (classes per batch) must be an int >= 2, got {p!r}")
        if not (isinstance(k, int) and k >= 2):
            raise ConfigurationError(f"k (images per class) must be an int >= 2, got {k!r}")
        if p > len(self.classes):
            raise ConfigurationError(
                f"p={p} classes per batch but the data has only {len(self.classes)} classes; "
                f"use p <= {len(self.classes)}"
            )
        if num_batches is None:
            num_batches = max(1, lab.numel() // (p * k))
        if not (isinstance(num_batches, int) and num_batches >= 1):
            raise ConfigurationError(f"num_batches must be an int >= 1, got {num_batches!r}")
        self.p, self.k, self.num_batches, self.seed = p, k, num_batches, int(seed)
        self.epoch = 0
        self._indices = {c: (lab == c).nonzero().flatten() for c in self.classes}
        self._groups: dict[Hashable, list[int]] | None = None
        if groups is not None:
            lookup = groups if isinstance(groups, Mapping) else dict(enumerate(groups))
            missing = [c for c in self.classes if c not in lookup]
            if missing:
                raise EmbedcamValueError(
                    f"classes {missing[:10]} have no group; give every class a group in groups"
                )
            by_group: dict[Hashable, list[int]] = {}
            for c in self.classes:
                by_group.setdefault(lookup[c], []).append(c)
            self._groups = by_group

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields.

        Args:
            epoch: Epoch number (>= 0).
        """
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to reproduce the next epoch: seed and epoch."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore [`state_dict`][paper_sku.sampler.PKSampler.state_dict].

        Args:
            state: A dict from [`state_dict`][paper_sku.sampler.PKSampler.state_dict].
        """
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def _generator(self) -> torch.Generator:
        entropy = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(entropy))

    def __iter__(self) -> Iterator[list[int]]:
        """Yield ``num_batches`` batches of ``p * k`` indices, grouped by class."""
        gen = self._generator()
        pick = self._group_picker(gen) if self._groups is not None else self._class_picker(gen)
        for _ in range(self.num_batches):
            batch: list[int] = []
            for c in pick():
                idx = self._indices[c]
                n = idx.numel()
                if n >= self.k:
                    chosen = idx[torch.randperm(n, generator=gen)[: self.k]]
                else:
                    extra = torch.randint(n, (self.k - n,), generator=gen)
                    chosen = torch.cat([idx, idx[extra]])
                batch.extend(chosen.tolist())
            yield batch

    def _class_picker(self, gen: torch.Generator):  # noqa: ANN202
        queue: list[int] = []

        def pick() -> list[int]:
            chosen: list[int] = []
            deferred: list[int] = []
            while len(chosen) < self.p:
                if not queue:
                    queue.extend(
                        self.classes[i] for i in torch.randperm(len(self.classes), generator=gen)
                    )
                c = queue.pop(0)
                # At a round boundary the new round may repeat a class already in the batch.
                (deferred if c in chosen else chosen).append(c)
            queue[:0] = deferred
            return chosen

        return pick

    def _group_picker(self, gen: torch.Generator):  # noqa: ANN202
        assert self._groups is not None
        names = list(self._groups)
        group_queue: list[Hashable] = []
        class_queues: dict[Hashable, list[int]] = {g: [] for g in names}

        def next_class(g: Hashable, taken: list[int]) -> int | None:
            members = self._groups[g]  # type: ignore[index]
            if all(c in taken for c in members):
                return None
            queue = class_queues[g]
            if all(c in taken for c in queue):
                queue.extend(members[i] for i in torch.randperm(len(members), generator=gen))
            i = next(i for i, c in enumerate(queue) if c not in taken)
            return queue.pop(i)

        def pick() -> list[int]:
            chosen: list[int] = []
            while len(chosen) < self.p:
                if not group_queue:
                    group_queue.extend(names[i] for i in torch.randperm(len(names), generator=gen))
                c = next_class(group_queue.pop(0), chosen)
                if c is not None:
                    chosen.append(c)
            return chosen

        return pick
