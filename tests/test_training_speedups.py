"""The CPU training speed-ups change no numbers: checked in float64, where rounding is
too small to set training's discrete choices (proposal ranking, sampling) apart.

In float32 two runs that differ only in summation order part ways after a few
iterations (a 1e-6 change in an objectness score reorders proposals), so a float32
comparison shows chaos, not whether the arithmetic is the same. In float64 the sparse
RoIAlign backward and channels-last convolutions must give the reference's losses and
weights to about 1e-9 over several SGD steps.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from distill.models.layout import use_channels_last
from distill.models.zoo import build_model


def _batch(task: str, seed: int) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(2):
        images.append(torch.rand(3, 96, 128, generator=g, dtype=torch.float64))
        xy = torch.rand(3, 2, generator=g, dtype=torch.float64) * 60
        wh = 20 + torch.rand(3, 2, generator=g, dtype=torch.float64) * 40
        boxes = torch.cat([xy, xy + wh], 1)
        target = {"boxes": boxes, "labels": torch.tensor([1, 2, 1])}
        if task == "keypoints":
            pts = xy[:, None, :] + torch.rand(3, 4, 2, generator=g,
                                              dtype=torch.float64) * wh[:, None]
            # torchvision insists on float32 keypoint targets, whatever the model's type
            target["keypoints"] = torch.cat([pts, torch.full((3, 4, 1), 2.0,
                                                              dtype=torch.float64)], 2).float()
        targets.append(target)
    return images, targets


def _torchvision_poolers(model: torch.nn.Module) -> None:
    heads = model.roi_heads  # type: ignore[attr-defined]
    heads.box_roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    if getattr(heads, "keypoint_roi_pool", None) is not None:
        heads.keypoint_roi_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)


@pytest.mark.parametrize("task", ["boxes", "keypoints"])
def test_sparse_roialign_and_channels_last_keep_training_numbers(task: str) -> None:
    torch.manual_seed(0)
    base = build_model("tiny", task, num_classes=3, num_keypoints=4 if task == "keypoints"
                       else 0, min_size=96, max_size=128).double().train()
    reference, ours = copy.deepcopy(base), use_channels_last(copy.deepcopy(base))
    _torchvision_poolers(reference)
    histories = []
    for model in (reference, ours):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        losses = []
        for step in range(4):
            torch.manual_seed(step)  # the same proposal sampling draws for both
            out = model(*_batch(task, step))
            loss = sum(out.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        histories.append((losses, {k: v.clone() for k, v in model.state_dict().items()}))
    (loss_ref, w_ref), (loss_ours, w_ours) = histories
    assert loss_ref[0] > 0
    assert loss_ours == pytest.approx(loss_ref, rel=1e-9)
    moved = 0
    for name, value in w_ref.items():
        if value.is_floating_point():
            torch.testing.assert_close(w_ours[name], value, rtol=1e-9, atol=1e-11)
            moved += int(not torch.equal(value, base.state_dict()[name]))
    assert moved > 10  # the steps did train the weights compared
