"""The mixed minibatch sampler: labeled and pseudo-labeled images at an expected ratio.

Every image of every minibatch independently comes from source ``s`` with
probability ``probs[s]`` (labeled 0.6, pseudo-labeled 0.4 in the paper), so the
ratio holds in expectation per minibatch rather than exactly. Within a source,
images are visited in epochs of a seeded permutation, so every image is seen
about equally often. Each draw also carries the horizontal-flip decision, which
keeps augmentation on the same seeded, resumable stream.

Distributed training: every rank draws its own share of the global batch.
Source choices and flips come from a per-rank generator (independent streams);
the epoch permutations are shared by all ranks and rank ``r`` walks positions
``r, r + W, r + 2W, ...``, so within an epoch the ranks see disjoint images.

State (``state_dict``) holds only tensors and ints, as a weights-only checkpoint
needs. Data-loader workers prefetch batches ahead of training, so the sampler
remembers its state after each of the last few batches and the trainer asks for
the state after the batch it actually consumed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from distill.errors import ConfigError

Draw = tuple[int, int, bool]  # (source, index within source, flip)
_HISTORY = 256  # batches of state kept for prefetching loaders
_MASK = (1 << 63) - 1


def _mix(*values: int) -> int:
    """A deterministic 63-bit seed from several integers (splitmix64-style)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & _MASK)) * 0xBF58476D1CE4E5B9 & ((1 << 64) - 1)
        h ^= h >> 31
    return h & _MASK


class MixedBatchSampler:
    """Yields lists of ``(source, index, flip)`` draws forever; see the module docstring."""

    def __init__(self, sizes: Sequence[int], probs: Sequence[float], batch_size: int, *,
                 seed: int, rank: int = 0, world_size: int = 1, flip_prob: float = 0.5) -> None:
        if len(sizes) != len(probs) or not sizes:
            raise ConfigError(f"need one probability per source, got sizes {list(sizes)} "
                              f"and probabilities {list(probs)}")
        if any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
            raise ConfigError(f"source probabilities {list(probs)} must be >= 0 and sum to 1")
        for i, (n, p) in enumerate(zip(sizes, probs, strict=True)):
            if p > 0 and n <= 0:
                raise ConfigError(f"source {i} has no images but probability {p}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} outside world size {world_size}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ConfigError(f"flip probability must lie in [0, 1], got {flip_prob}")
        self.sizes = [int(n) for n in sizes]
        self.probs = [float(p) for p in probs]
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.flip_prob = flip_prob
        self._cum = torch.tensor(self.probs, dtype=torch.float64).cumsum(0)
        self._gen = torch.Generator().manual_seed(_mix(seed, 1, rank))
        self._epochs = [0] * len(sizes)
        self._positions = [0] * len(sizes)
        self._perms: list[torch.Tensor | None] = [None] * len(sizes)
        self.batches = 0
        self._history: OrderedDict[int, dict[str, Any]] = OrderedDict()

    def _shard(self, source: int) -> torch.Tensor:
        """This rank's slice of the current epoch's permutation of ``source``."""
        perm = self._perms[source]
        if perm is None:
            g = torch.Generator().manual_seed(_mix(self.seed, 2, source, self._epochs[source]))
            full = torch.randperm(self.sizes[source], generator=g)
            # With fewer images than ranks every rank walks the whole permutation.
            perm = full[self.rank::self.world_size] if len(full) >= self.world_size else full
            self._perms[source] = perm
        return perm

    def _draw_index(self, source: int) -> int:
        shard = self._shard(source)
        index = int(shard[self._positions[source]])
        self._positions[source] += 1
        if self._positions[source] >= len(shard):
            self._epochs[source] += 1
            self._positions[source] = 0
            self._perms[source] = None
        return index

    def next_batch(self) -> list[Draw]:
        """Draws one minibatch (this rank's share) and advances the state."""
        u = torch.rand(self.batch_size, generator=self._gen, dtype=torch.float64)
        flips = torch.rand(self.batch_size, generator=self._gen) < self.flip_prob
        sources = torch.searchsorted(self._cum, u, right=True).clamp_(max=len(self.sizes) - 1)
        batch = [(int(s), self._draw_index(int(s)), bool(f))
                 for s, f in zip(sources.tolist(), flips.tolist(), strict=True)]
        self.batches += 1
        self._history[self.batches] = self.state_dict()
        while len(self._history) > _HISTORY:
            self._history.popitem(last=False)
        return batch

    def __iter__(self) -> Iterator[list[Draw]]:
        while True:
            yield self.next_batch()

    def state_dict(self, after_batch: int | None = None) -> dict[str, Any]:
        """The state now, or as it was right after batch number ``after_batch`` (1-based,
        counted over the whole run) when a prefetching loader has drawn further ahead."""
        if after_batch is not None and after_batch != self.batches:
            if after_batch not in self._history:
                raise ConfigError(f"sampler state after batch {after_batch} is no longer known "
                                  f"(now at batch {self.batches})")
            return self._history[after_batch]
        return {"generator": self._gen.get_state(), "epochs": list(self._epochs),
                "positions": list(self._positions), "batches": self.batches,
                "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "sizes": list(self.sizes)}

    def restart(self, seed: int, batches: int) -> None:
        """Fresh streams from ``seed``, counting on from ``batches`` (resuming a run on a
        different number of processes, where the old per-rank streams do not apply)."""
        self.seed = seed
        self._gen.manual_seed(_mix(seed, 1, self.rank))
        self._epochs = [0] * len(self.sizes)
        self._positions = [0] * len(self.sizes)
        self._perms = [None] * len(self.sizes)
        self.batches = batches
        self._history.clear()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues exactly where ``state`` was taken; the data must be the same."""
        mine = (self.seed, self.rank, self.world_size, self.sizes)
        theirs = (state["seed"], state["rank"], state["world_size"], list(state["sizes"]))
        if mine != theirs:
            raise ConfigError(f"sampler state was taken with (seed, rank, world size, source "
                              f"sizes) {theirs}, this run has {mine}")
        self._gen.set_state(state["generator"])
        self._epochs = [int(e) for e in state["epochs"]]
        self._positions = [int(p) for p in state["positions"]]
        self._perms = [None] * len(self.sizes)
        self.batches = int(state["batches"])
        self._history.clear()
