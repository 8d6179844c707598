"""The sparse-matrix RoIAlign: torchvision's values and gradients, to float rounding."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align

from distill.models.roi_align import SparseMultiScaleRoIAlign, roi_align


def _rois(k: int, height: int, width: int, images: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x1 = torch.rand(k, generator=g) * width * 1.1 - width * 0.1  # some start outside
    y1 = torch.rand(k, generator=g) * height * 1.1 - height * 0.1
    w = torch.rand(k, generator=g) * width * 0.4
    h = torch.rand(k, generator=g) * height * 0.4
    w[:3] = 0.2  # degenerate RoIs (forced to one pixel when not aligned)
    # some end past the right or bottom edge (x1 up to 1.1 x width, h up to 0.4 x height)
    boxes = torch.stack([x1, y1, x1 + w, y1 + h], 1)
    index = torch.randint(0, images, (k, 1), generator=g).float()
    return torch.cat([index, boxes], 1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize(("size", "ratio"), [((7, 7), 2), ((14, 14), 2), ((5, 3), 1),
                                             ((4, 4), 3)])
def test_values_and_gradients_match_torchvision(aligned: bool, size: tuple[int, int],
                                                ratio: int) -> None:
    torch.manual_seed(0)
    features = torch.randn(3, 8, 37, 23)
    rois = _rois(60, 37 * 4, 23 * 4, 3, seed=ratio)
    grad = torch.randn(60, 8, *size)
    results = []
    for fn in (tv_roi_align, roi_align):
        f = features.clone().requires_grad_()
        out = fn(f, rois, size, 0.25, ratio, aligned)
        out.backward(grad)
        assert f.grad is not None
        results.append((out.detach(), f.grad))
    (out_tv, grad_tv), (out_ours, grad_ours) = results
    assert out_tv.abs().max() > 0 and grad_tv.abs().max() > 0
    torch.testing.assert_close(out_ours, out_tv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_ours, grad_tv, rtol=1e-5, atol=1e-5)


def test_float64_agrees_to_rounding() -> None:
    """In float64 the two orders of summation agree to 1e-12: same terms, same weights."""
    torch.manual_seed(2)
    features = torch.randn(2, 5, 30, 41, dtype=torch.float64)
    rois = _rois(40, 30 * 8, 41 * 8, 2, seed=7).double()
    grad = torch.randn(40, 5, 7, 7, dtype=torch.float64)
    results = []
    for fn in (tv_roi_align, roi_align):
        f = features.clone().requires_grad_()
        out = fn(f, rois, (7, 7), 0.125, 2, False)
        out.backward(grad)
        results.append((out.detach(), f.grad))
    (out_tv, grad_tv), (out_ours, grad_ours) = results
    torch.testing.assert_close(out_ours, out_tv, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_ours, grad_tv, rtol=0, atol=1e-12)


def test_channels_last_features_and_no_grad_path() -> None:
    features = torch.randn(2, 16, 20, 30).contiguous(memory_format=torch.channels_last)
    rois = _rois(25, 80, 120, 2, seed=3)
    f = features.clone().requires_grad_()
    ours = roi_align(f, rois, (7, 7), 0.25, 2)
    assert ours.is_contiguous()  # the standard layout, as torchvision's: heads view it
    ours.sum().backward()
    g = features.contiguous().requires_grad_()
    theirs = tv_roi_align(g, rois, (7, 7), 0.25, 2, False)
    theirs.sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert f.grad is not None and g.grad is not None
    torch.testing.assert_close(f.grad, g.grad, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(roi_align(features, rois, (7, 7), 0.25, 2),
                           tv_roi_align(features, rois, (7, 7), 0.25, 2, False))


def test_multiscale_pooler_matches_torchvision() -> None:
    torch.manual_seed(1)
    names = ["0", "1", "2"]
    feats = {n: torch.randn(2, 4, 64 // 2 ** i, 48 // 2 ** i) for i, n in enumerate(names)}
    shapes = [(256, 192), (250, 180)]
    boxes = [torch.tensor([[0.0, 0, 30, 40], [10, 10, 200, 240], [5, 5, 90, 60]]),
             torch.tensor([[100.0, 20, 180, 250], [1, 2, 3, 4]])]
    grads = []
    for cls in (MultiScaleRoIAlign, SparseMultiScaleRoIAlign):
        pooler = cls(names, output_size=7, sampling_ratio=2)
        x = {k: v.clone().requires_grad_() for k, v in feats.items()}
        out = pooler(x, boxes, shapes)
        (out * torch.arange(out.numel()).view_as(out).float().sin()).sum().backward()
        grads.append((out.detach(), [x[n].grad for n in names]))
    (out_tv, g_tv), (out_ours, g_ours) = grads
    torch.testing.assert_close(out_ours, out_tv, rtol=1e-5, atol=1e-6)
    assert all(g is not None for g in g_tv)
    for a, b in zip(g_tv, g_ours, strict=True):
        assert a is not None
        # A level no box maps to: torchvision adds zeros, ours leaves it untouched.
        torch.testing.assert_close(b if b is not None else torch.zeros_like(a), a,
                                   rtol=1e-5, atol=1e-5)
    assert sum(b is not None for b in g_ours) >= 2  # the boxes do span levels
