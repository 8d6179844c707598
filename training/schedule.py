"""Learning-rate schedule: linear warm-up, then steps of /10 at ~70% and ~90% of training.

A pure function of the iteration, so resuming needs nothing but the iteration
number; the settings are still stored with the checkpoint, to notice when a
resumed run asks for a different schedule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch.optim import Optimizer

from distill.errors import ConfigError


@dataclass(frozen=True)
class WarmupStepSchedule:
    """``base_lr`` after a linear ramp from ``base_lr * warmup_factor`` over
    ``warmup_iters``, multiplied by ``gamma`` at each fraction of ``total_iters``
    in ``steps`` (Detectron's ``steps_with_decay`` with linear warm-up)."""

    base_lr: float
    total_iters: int
    warmup_iters: int = 100
    warmup_factor: float = 1.0 / 3.0
    steps: tuple[float, ...] = (0.7, 0.9)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.base_lr <= 0:
            raise ConfigError(f"learning rate must be > 0, got {self.base_lr}")
        if self.total_iters < 1:
            raise ConfigError(f"iterations must be >= 1, got {self.total_iters}")
        if self.warmup_iters < 0:
            raise ConfigError(f"warm-up iterations must be >= 0, got {self.warmup_iters}")
        if any(not 0 < s < 1 for s in self.steps) or list(self.steps) != sorted(self.steps):
            raise ConfigError(f"step fractions must increase within (0, 1), got {self.steps}")

    @property
    def milestones(self) -> tuple[int, ...]:
        """Iterations at which the rate drops."""
        return tuple(round(s * self.total_iters) for s in self.steps)

    def lr(self, iteration: int) -> float:
        """Learning rate for (0-based) ``iteration``."""
        rate = self.base_lr * self.gamma ** sum(iteration >= m for m in self.milestones)
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            rate *= self.warmup_factor * (1 - alpha) + alpha
        return rate

    def apply(self, optimizer: Optimizer, iteration: int) -> float:
        """Sets every parameter group's rate for ``iteration``; returns it."""
        rate = self.lr(iteration)
        for group in optimizer.param_groups:
            group["lr"] = rate
        return rate

    def state_dict(self) -> dict[str, Any]:
        """The settings, as weights-only-safe values."""
        state = asdict(self)
        state["steps"] = list(self.steps)
        return state


# Warm-up bounds, in iterations. The floor is the model's, not the schedule's: a detector
# trained from scratch is unstable over its first tens of iterations (the RPN's proposals
# turn from random to object-like and the box head's inputs change under it). At 10% of a
# 60-iteration run (6) the rate was full by iteration 6 and the box head's losses blew up
# at iterations 16-39 (issue 26); with 30 the same runs train at up to twice the default
# rate. Schedules of 500 iterations and more keep their 10%.
MIN_WARMUP = 50
MAX_WARMUP = 200


def default_warmup(total_iters: int) -> int:
    """Warm-up length: 10% of training, at least :data:`MIN_WARMUP` iterations but never
    more than half of a short run, at most :data:`MAX_WARMUP` (Detectron uses 500 of 90k
    on 8 GPUs; short CPU schedules need proportionally more)."""
    return max(1, min(MAX_WARMUP, max(total_iters // 10, MIN_WARMUP), total_iters // 2))
