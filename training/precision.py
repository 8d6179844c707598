"""The forward pass's arithmetic: float32, or bfloat16 autocast (``--precision bf16``).

Under bf16 autocast the convolutions and matrix products run in bfloat16 (oneDNN and
cuBLAS accumulate in float32) and the rest keeps float32; the weights, their gradients,
the optimizer and the checkpoints stay float32. bfloat16 has float32's range, so no
loss scaling is needed, unlike float16. The losses come out in float32 (autocast's
rule for cross-entropy and the L1 losses) and are summed in float32; RoIAlign samples
float32 features (:mod:`distill.models.roi_align`). The RPN's proposals are decoded in
bfloat16 (torchvision casts the anchors to the regression's dtype), so they are
rounded to about 1/128 of their coordinates: the box head's targets are computed
from the same rounded proposals, so training stays consistent, but it is not float32's
arithmetic, and its results differ as a change of seed does.

It pays where the hardware computes bfloat16 natively: GPUs since Ampere, CPUs with
AVX-512 BF16 or AMX. Elsewhere oneDNN emulates it, slower than float32, and
:func:`check_precision` says so. What it costs in AP: ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from training.train_config import Precision

log = logging.getLogger(__name__)


def forward_context(precision: Precision, device: torch.device
                    ) -> contextlib.AbstractContextManager[object]:
    """What the forward pass (model and losses) runs under: autocast for ``bf16``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_precision(precision: Precision, device: torch.device) -> None:
    """Warns when ``bf16`` would run emulated (a CPU without AVX-512 BF16 or AMX)."""
    if precision != "bf16" or device.type != "cpu":
        return
    cpu = torch.cpu
    native = cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported()
    if not native:
        log.warning("--precision bf16 on a CPU without AVX-512 BF16 or AMX: oneDNN "
                    "emulates bfloat16, which is slower than fp32 here")
