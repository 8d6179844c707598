"""The iteration loop of :func:`training.trainer.train` and its bookkeeping.

Each iteration draws a minibatch, steps the schedule and the optimizer, and stops
with a clear error on a non-finite loss; every ``log_every`` iterations a metrics
line (averaged over ranks) goes to the JSON-lines file and TensorBoard; every
``checkpoint_every`` the full training state is saved for ``--resume``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from distill.card import ModelCard
from distill.checkpoint import save_checkpoint
from distill.errors import DistillError
from training import distributed as dd
from training import run_files
from training.precision import forward_context
from training.sampler import MixedBatchSampler
from training.schedule import WarmupStepSchedule
from training.train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced."""

    checkpoint: Path
    iterations: int
    start_iteration: int
    seconds: float
    history: list[dict[str, Any]]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


class IterationLoop:
    """The iteration loop with its bookkeeping (metrics window, writers, checkpoints)."""

    def __init__(self, cfg: TrainConfig, env: dd.DistEnv, card: ModelCard, net: nn.Module,
                 optimizer: torch.optim.Optimizer, schedule: WarmupStepSchedule,
                 sampler: MixedBatchSampler, num_sources: int) -> None:
        self.cfg, self.env, self.card, self.net = cfg, env, card, net
        self.optimizer, self.schedule, self.sampler = optimizer, schedule, sampler
        self.num_sources = num_sources
        self.history: list[dict[str, Any]] = []
        self.tb = _tensorboard(cfg) if env.is_main else None

    def run(self, batches: Iterator[tuple[list[Tensor], list[dict[str, Tensor]], list[int]]],
            start: int) -> TrainResult:
        """Runs iterations ``start`` to the end (or ``cfg.stop_at``); the last one writes
        the final checkpoint."""
        cfg, env = self.cfg, self.env
        self.net.train()
        sums: dict[str, float] = {}
        per_source = [0] * self.num_sources
        steps = 0
        t_start = t_window = time.perf_counter()
        end = cfg.iters if cfg.stop_at is None else max(start, min(cfg.iters, cfg.stop_at))
        bar = tqdm(total=cfg.iters, initial=start, unit="it", dynamic_ncols=True,
                   disable=not (cfg.progress and env.is_main), desc=cfg.out.stem)
        for it in range(start, end):
            images, targets, srcs = next(batches)
            images = [img.to(env.device, non_blocking=True) for img in images]
            targets = [{k: v.to(env.device) for k, v in t.items()} for t in targets]
            lr = self.schedule.apply(self.optimizer, it)
            with forward_context(cfg.precision, env.device):
                losses = self.net(images, targets)
            losses = {k: v.float() for k, v in losses.items()}  # bf16: summed in float32
            loss = sum(losses.values(), torch.zeros((), device=env.device))
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise DistillError(f"loss became {loss_value} at iteration {it} (lr {lr:g}); "
                                   "lower --lr or raise --warmup-iters")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            sums["loss"] = sums.get("loss", 0.0) + loss_value
            for s in srcs:
                per_source[s] += 1
            steps += 1
            done = it + 1
            if done % cfg.log_every == 0 or done == cfg.iters:
                record = self._log(done, lr, sums, steps, per_source,
                                   time.perf_counter() - t_window, t_start)
                bar.set_postfix(loss=f"{record['loss']:.3f}",
                                img_s=f"{record['images_per_s']:.1f}")
                sums, per_source, steps = {}, [0] * self.num_sources, 0
                t_window = time.perf_counter()
            if done % cfg.checkpoint_every == 0 or done == end:
                self._save_state(done)
                if bar.disable and env.is_main and done < cfg.iters:  # --quiet: a heartbeat
                    rate = (done - start) / (time.perf_counter() - t_start)
                    log.info("%s: iteration %d of %d (%.2f it/s, about %.0f min left)",
                             cfg.out.stem, done, cfg.iters, rate, (cfg.iters - done) / rate / 60)
            bar.update(1)
        bar.close()
        if end < cfg.iters:
            log.info("stopped at iteration %d of %d; --resume continues", end, cfg.iters)
        elif env.is_main:
            save_checkpoint(cfg.out, self.card, unwrap(self.net).state_dict(),
                            {"iteration": cfg.iters})
            log.info("wrote %s after %d iterations", cfg.out, cfg.iters)
        if self.tb is not None:
            self.tb.close()
        dd.barrier(env)
        return TrainResult(cfg.out, end, start, time.perf_counter() - t_start, self.history)

    def _log(self, done: int, lr: float, sums: dict[str, float], steps: int,
             per_source: list[int], window_s: float, t_start: float) -> dict[str, Any]:
        keys = sorted(sums)
        # Averaged over ranks, so the log reads the same however many processes ran.
        values = dd.mean_over_ranks(self.env, torch.tensor(
            [sums[k] / steps for k in keys] + [float(n) for n in per_source],
            dtype=torch.float64)).tolist()
        counts = [n * self.env.world_size for n in values[len(keys):]]
        images = sum(counts)
        record: dict[str, Any] = {"iter": done, "lr": lr,
                                  **{k: round(v, 5) for k, v in zip(keys, values, strict=False)},
                                  "labeled_fraction": round(counts[0] / max(images, 1), 4),
                                  "images_per_s": round(images / max(window_s, 1e-9), 2),
                                  "elapsed_s": round(time.perf_counter() - t_start, 1)}
        self.history.append(record)
        if self.env.is_main:
            path = run_files.metrics_path(self.cfg.out)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            if self.tb is not None:
                for k, v in record.items():
                    if k != "iter":
                        self.tb.add_scalar(f"train/{k}", v, done)
        return record

    def _save_state(self, done: int) -> None:
        # Every rank contributes its sampler and RNG states; rank 0 writes.
        samplers = dd.all_gather(self.env, self.sampler.state_dict(after_batch=done))
        rngs = dd.all_gather(self.env, run_files.rng_state())
        if self.env.is_main:
            extra = {"iteration": done, "optimizer": self.optimizer.state_dict(),
                     "schedule": self.schedule.state_dict(), "sampler": samplers, "rng": rngs}
            save_checkpoint(run_files.resume_path(self.cfg.out), self.card,
                            unwrap(self.net).state_dict(), extra)
        dd.barrier(self.env)


def _tensorboard(cfg: TrainConfig) -> Any:
    """A SummaryWriter when TensorBoard is installed (and not switched off), else None."""
    if cfg.tensorboard is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if cfg.tensorboard:
            log.warning("--tensorboard asked for, but the tensorboard package is not installed")
        return None
    return SummaryWriter(log_dir=str(run_files.tensorboard_dir(cfg.out)))
