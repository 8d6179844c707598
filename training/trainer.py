"""Training a teacher (labeled only) or a student (labeled + pseudo-labeled).

This module sets up the model, data, optimizer and resumed state; the iterations run in
:mod:`training.train_loop`.

SGD with momentum and weight decay on the warm-up/step schedule; every minibatch
drawn by the mixed sampler; checkpoints at intervals (atomic) that ``resume``
continues exactly (iteration, optimizer, sampler and RNG states); metrics as JSON
lines next to the checkpoint; DistributedDataParallel when run under torchrun,
each rank drawing its own share of the global batch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from distill.card import ModelCard
from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.coco import load_coco, training_categories
from distill.errors import ConfigError, DistillError
from distill.models.layout import place
from distill.models.zoo import build_model, default_sizes
from distill.options import ARCHITECTURES
from training import distributed as dd
from training import run_files
from training.augment import jitter_sizes
from training.data import (
    DetectionDataset,
    MixedDataset,
    check_compatible,
    collate,
    prepare_records,
)
from training.ignore import enable_ignore_regions
from training.precision import check_precision
from training.sampler import MixedBatchSampler
from training.schedule import WarmupStepSchedule, default_warmup
from training.train_config import PRECISIONS, TrainConfig
from training.train_loop import IterationLoop, TrainResult, unwrap

log = logging.getLogger(__name__)


def train(cfg: TrainConfig) -> TrainResult:
    """Trains a detector as ``cfg`` says and writes ``cfg.out``; see the module docstring."""
    _validate(cfg)
    env = dd.setup(cfg.device)
    try:
        return _train(cfg, env)
    finally:
        dd.teardown(env)


def _validate(cfg: TrainConfig) -> None:
    if cfg.arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {cfg.arch!r}; choose one of {ARCHITECTURES}")
    if cfg.iters < 1:
        raise ConfigError(f"--iters must be >= 1, got {cfg.iters}")
    if (cfg.pseudo_json is None) != (cfg.pseudo_images is None):
        raise ConfigError("--pseudo-json and --pseudo-images go together")
    if cfg.pseudo_json is not None and not 0.0 < cfg.labeled_ratio < 1.0:
        raise ConfigError(f"--labeled-ratio must lie in (0, 1), got {cfg.labeled_ratio}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {cfg.precision!r}; choose one of {PRECISIONS}")
    if cfg.checkpoint_every < 1 or cfg.log_every < 1:
        raise ConfigError(f"checkpoint and log intervals must be >= 1, got "
                          f"{cfg.checkpoint_every} and {cfg.log_every}")


def _train(cfg: TrainConfig, env: dd.DistEnv) -> TrainResult:
    if cfg.batch_size % env.world_size:
        raise ConfigError(f"batch size {cfg.batch_size} does not split over "
                          f"{env.world_size} processes")
    labeled = load_coco(cfg.train_json)
    categories = training_categories(labeled, cfg.task)
    min_size, max_size = default_sizes(cfg.arch)
    min_size, max_size = cfg.min_size or min_size, cfg.max_size or max_size
    card = run_files.build_card(arch=cfg.arch, task=cfg.task, labeled=labeled,
                           categories=categories, min_size=min_size, max_size=max_size,
                           arch_options=cfg.arch_options,
                           provenance=run_files.provenance(cfg.command, cfg.settings()))
    sources = _sources(cfg, card, labeled, env)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every rerun
    model = build_model(cfg.arch, cfg.task, num_classes=card.num_classes,
                        num_keypoints=len(card.keypoint_names), min_size=min_size,
                        max_size=max_size, options=cfg.arch_options,
                        backbone_weights=cfg.backbone_weights)
    enable_ignore_regions(model)  # inference unchanged; training skips ignore regions
    if cfg.init != "scratch":
        _load_init(model, Path(cfg.init), card)
    _set_jitter(model, cfg, min_size, max_size)
    place(model, env.device)  # channels-last on a CPU: faster convolutions there
    check_precision(cfg.precision, env.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    schedule = WarmupStepSchedule(
        cfg.lr, cfg.iters, default_warmup(cfg.iters) if cfg.warmup_iters is None
        else cfg.warmup_iters, steps=tuple(cfg.steps))
    probs = [1.0] if len(sources) == 1 else [cfg.labeled_ratio, 1.0 - cfg.labeled_ratio]
    sampler = MixedBatchSampler([len(s) for s in sources], probs,
                                cfg.batch_size // env.world_size, seed=cfg.seed,
                                rank=env.rank, world_size=env.world_size,
                                flip_prob=cfg.flip_prob)
    torch.manual_seed(cfg.seed * 1000 + 17 + env.rank)  # this rank's scale-jitter stream
    start = _maybe_resume(cfg, env, card, model, optimizer, schedule, sampler)
    if start >= cfg.iters:
        log.info("%s already trained for %d iterations; nothing to do", cfg.out, start)
        if env.is_main and not cfg.out.is_file():
            save_checkpoint(cfg.out, card, unwrap(model).state_dict(), {"iteration": start})
        return TrainResult(cfg.out, start, start, 0.0, [])

    net: nn.Module = model
    if env.distributed:
        if cfg.sync_bn and env.device.type == "cuda":
            # Small per-GPU batches give noisy BatchNorm statistics; pool them over ranks.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    loader = DataLoader(MixedDataset(sources), batch_sampler=sampler,
                        collate_fn=collate, num_workers=cfg.num_workers,
                        pin_memory=env.device.type == "cuda",
                        # Its own generator: creating the iterator must not draw from the
                        # global RNG, or a resumed run's jitter stream would shift by one.
                        generator=torch.Generator().manual_seed(cfg.seed))
    loop = IterationLoop(cfg, env, card, net, optimizer, schedule, sampler, len(sources))
    return loop.run(iter(loader), start)


def _sources(cfg: TrainConfig, card: ModelCard, labeled: dict[str, Any],
             env: dd.DistEnv) -> list[DetectionDataset]:
    perm = card.flip_permutation() if cfg.task == "keypoints" else []
    records, counts = prepare_records(labeled, cfg.images, cfg.task, card.categories,
                                      cfg.crowd)
    if env.is_main:
        log.info(counts.describe(f"labeled {cfg.train_json}"))
    sources = [DetectionDataset(records, cfg.task, perm)]
    if cfg.pseudo_json is not None and cfg.pseudo_images is not None:
        pseudo = load_coco(cfg.pseudo_json)
        check_compatible(card.categories, pseudo, cfg.task, str(cfg.pseudo_json))
        records, counts = prepare_records(pseudo, cfg.pseudo_images, cfg.task, card.categories,
                                          cfg.crowd)
        if env.is_main:
            log.info(counts.describe(f"pseudo-labeled {cfg.pseudo_json}"))
        sources.append(DetectionDataset(records, cfg.task, perm))
    if not sources[0].records:
        raise DistillError(f"{cfg.train_json} has no images to train on")
    return sources


def _set_jitter(model: GeneralizedRCNN, cfg: TrainConfig, min_size: int, max_size: int) -> None:
    """Training-time sizes: several shorter sides (test size last, which eval uses), with
    the longer-side cap scaled so the largest size is not clipped back by it."""
    sizes = jitter_sizes(min_size, *cfg.scale_jitter)
    transform = model.transform
    transform.min_size = sizes
    transform.max_size = max(max_size, round(max(sizes) * max_size / min_size))


def _load_init(model: nn.Module, path: Path, card: ModelCard) -> None:
    """Starts from a checkpoint's weights (fine-tuning); tensors whose name or shape do
    not fit (another class count, say) keep their initial values and are listed."""
    other, state, _ = load_checkpoint(path)
    if (other.arch, other.task) != (card.arch, card.task):
        raise ConfigError(f"--init {path} is a {other.arch}/{other.task} model; this run "
                          f"trains {card.arch}/{card.task}")
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(fitting))
    model.load_state_dict(fitting, strict=False)
    log.info("initialised from %s (%d tensors; %d left at their initial values%s)", path,
             len(fitting), len(skipped), f": {skipped[:5]}" if skipped else "")


def _maybe_resume(cfg: TrainConfig, env: dd.DistEnv, card: ModelCard, model: nn.Module,
                  optimizer: torch.optim.Optimizer, schedule: WarmupStepSchedule,
                  sampler: MixedBatchSampler) -> int:
    """Loads the last training state when ``cfg.resume`` and one exists; returns the
    iteration to start from."""
    last = run_files.resume_path(cfg.out)
    if not cfg.resume or not last.is_file():
        if cfg.resume:
            log.info("--resume: no %s yet, starting from iteration 0", last)
        if env.is_main:  # a fresh run: no metric lines of an earlier one
            run_files.truncate_metrics(run_files.metrics_path(cfg.out), 0)
        return 0
    old, state, extra = load_checkpoint(last)
    why = run_files.same_model(old, card)
    if why is not None:
        raise ConfigError(f"cannot resume from {last}: it trains another model ({why})")
    if "optimizer" not in extra:
        raise ConfigError(f"{last} holds no training state to resume from")
    model.load_state_dict(state)
    optimizer.load_state_dict(extra["optimizer"])
    start = int(extra["iteration"])
    if extra.get("schedule") != schedule.state_dict():
        log.warning("resuming with a different schedule: %s (was %s)", schedule.state_dict(),
                    extra.get("schedule"))
    samplers, rngs = extra.get("sampler", []), extra.get("rng", [])
    if len(samplers) == env.world_size:
        sampler.load_state_dict(samplers[env.rank])
        run_files.set_rng_state(rngs[env.rank])
    else:
        # Another world size: the old per-rank streams do not map onto the new ranks.
        log.warning("resuming on %d processes from a %d-process run: fresh sampler streams",
                    env.world_size, len(samplers))
        sampler.restart(sampler.seed + 7919 * start, start)
    if env.is_main:
        run_files.truncate_metrics(run_files.metrics_path(cfg.out), start)
        log.info("resumed from %s at iteration %d", last, start)
    return start
