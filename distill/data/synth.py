"""A deterministic synthetic COCO data set of stick figures, balls, cones and kites.

No real data can be downloaded where the tests, the demo and the benchmarks run, so
they train tiny detectors on this instead. Each image draws its own random generator
from ``(seed, split, index)``: splits are independent, and asking for more images of a
split leaves the first ones unchanged. Figures face the viewer, so the figure's left
side is on the image's right, and a horizontal flip must swap left and right labels.

Two families share the scene logic (how many figures and objects, their depth order,
the boxes and keypoints): ``figures`` (the default, on which settings are chosen) and
``blocks`` (``blocks.py``, on which they are confirmed), each a :class:`Family`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from distill.data import blocks
from distill.data import figures as fg
from distill.options import DEFAULT_SYNTH_FAMILY, SynthFamily

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
"""The keypoints, in order, COCO's 17 without the eyes and ears."""

SKELETON: list[list[int]] = [
    [12, 10], [10, 8], [13, 11], [11, 9], [8, 9], [2, 8], [3, 9],
    [2, 3], [2, 4], [3, 5], [4, 6], [5, 7], [1, 2], [1, 3],
]
"""COCO-style limbs as 1-based index pairs into :data:`KEYPOINT_NAMES`."""

OKS_SIGMAS: tuple[float, ...] = (
    0.026, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
    0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)
"""COCO's per-joint OKS sigmas for the joints kept, in :data:`KEYPOINT_NAMES` order."""

PERSON_CATEGORY: dict[str, Any] = {
    "id": 1, "name": "person", "supercategory": "person",
    "keypoints": list(KEYPOINT_NAMES), "skeleton": SKELETON,
}
"""The only category of the keypoints files."""

BOX_CATEGORIES: list[dict[str, Any]] = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 2, "name": "ball", "supercategory": "sports"},
    {"id": 3, "name": "cone", "supercategory": "outdoor"},
    {"id": 4, "name": "kite", "supercategory": "sports"},
]
"""The categories of the boxes files: person plus box-only objects, common to rare."""

SPLITS: tuple[str, ...] = ("labeled", "unlabeled", "test", "shifted")
SPLIT_CODE = {name: i for i, name in enumerate(SPLITS)}  # in seeds and image ids; never renumber
_PERSON_COUNT_P = (0.1, 0.3, 0.3, 0.2, 0.1)  # 0..4 figures

MakeObject = Callable[[np.random.Generator, fg.Style, int, int], list[fg.Prim]]


@dataclass(frozen=True)
class Family:
    """One look of the data set: styles, backgrounds, figures, objects, sizes."""

    name: SynthFamily
    box_categories: list[dict[str, Any]]
    normal: fg.Style
    shifted: fg.Style
    background: Callable[[np.random.Generator, bool, int, int], Image.Image]
    figure: Callable[[np.random.Generator, fg.Style, int, int], fg.Figure]
    # (category id, maker, Poisson mean per image, cap); strongly skewed means, so that
    # rare classes gain most from pseudo-labels.
    objects: tuple[tuple[int, MakeObject, float, int], ...]
    sizes: tuple[int, int]  # default (min_side, max_side)


MIN_VISIBLE = 3
_SUPERSAMPLE = 2  # drawn at 2x and box-filtered down: cheap anti-aliasing
GENERATOR_VERSION = "2"  # written into the files; 2: the milder shifted look


@dataclass(frozen=True)
class Instance:
    """One annotated object of a rendered scene (persons carry COCO keypoints)."""

    category_id: int
    bbox: tuple[float, float, float, float]  # x, y, w, h
    keypoints: list[float] | None


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int, amp: float) -> np.ndarray:
    """Low-frequency colour noise: a coarse random grid, bilinearly upsampled."""
    gw, gh = cells, max(2, round(cells * h / w))
    grid = np.clip(rng.normal(128, amp, (gh, gw, 3)), 0, 255).astype(np.uint8)
    up = Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(up, dtype=np.float32) - 128.0


def _background(rng: np.random.Generator, shifted: bool, w: int, h: int) -> Image.Image:
    """A gradient, blotches and stripes (or, shifted: a dim, grainy street-like scene)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if shifted:
        hue = rng.uniform(0.45, 0.7)
        # Dimmer than the normal look (0.35-0.95) but not dark: a shift the teacher can
        # partly bridge, as sports footage is for a COCO model (see the note on the style).
        c0 = fg.hsv(hue, rng.uniform(0.15, 0.5), rng.uniform(0.3, 0.5))
        c1 = fg.hsv(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.15, 0.5), rng.uniform(0.45, 0.75))
        t = (yy / h)[..., None]  # mostly vertical, like sky over ground
    else:
        c0 = fg.hsv(rng.uniform(), rng.uniform(0.05, 0.5), rng.uniform(0.35, 0.95))
        c1 = fg.hsv(rng.uniform(), rng.uniform(0.05, 0.5), rng.uniform(0.35, 0.95))
        ang = rng.uniform(0, 2 * math.pi)
        proj = xx * math.cos(ang) + yy * math.sin(ang)
        t = ((proj - proj.min()) / max(float(np.ptp(proj)), 1.0))[..., None]
    arr = np.asarray(c0, np.float32) * (1 - t) + np.asarray(c1, np.float32) * t
    arr += _smooth_noise(rng, w, h, int(rng.integers(3, 8)), 8.0 if shifted else 18.0)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    mix = [tuple(int(v) for v in np.clip(np.asarray(c) + rng.normal(0, 35, 3), 0, 255))
           for c in (c0, c1) for _ in range(3)]
    for _ in range(int(rng.integers(2, 7))):
        color = mix[int(rng.integers(len(mix)))]
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.1, 0.5) * w, y0 + rng.uniform(0.1, 0.5) * h
        if shifted:  # blocky buildings rather than soft blotches
            draw.rectangle((x0, y0, x1, y1), fill=color)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=color)
    if shifted:
        for _ in range(int(rng.integers(3, 12))):  # small lit windows
            x, y, s = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, 6)
            draw.rectangle((x, y, x + s, y + s), fill=fg.hsv(rng.uniform(0.1, 0.16), 0.5, 0.9))
    else:
        for _ in range(int(rng.integers(0, 4))):
            ang = rng.uniform(0, math.pi)
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), float(w + h)
            dx, dy = r * math.cos(ang), r * math.sin(ang)
            color = mix[int(rng.integers(len(mix)))]
            draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=color,
                      width=int(rng.integers(3, 24)))
    arr = np.asarray(img, dtype=np.float32)
    if shifted:
        r2 = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2)[..., None]
        arr *= 1.0 - 0.4 * r2  # vignette
    sigma = rng.uniform(5, 11) if shifted else rng.uniform(3, 9)
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(sigma)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _mask_box(prims: tuple[fg.Prim, ...] | list[fg.Prim], w: int, h: int
              ) -> tuple[float, float, float, float] | None:
    """Tight box of what ``prims`` draw inside the frame, ``x, y, w, h`` in 1x pixels."""
    s = _SUPERSAMPLE
    mask = Image.new("L", (w * s, h * s))
    fg.render(ImageDraw.Draw(mask), prims, s, mask=True)
    box = mask.getbbox()
    if box is None:
        return None
    x0, y0, x1, y1 = (v / s for v in box)
    if x1 - x0 < 2 or y1 - y0 < 2:  # a sliver at the edge: not a useful target
        return None
    return (x0, y0, x1 - x0, y1 - y0)


FIGURES = Family("figures", BOX_CATEGORIES, fg.NORMAL_STYLE, fg.SHIFTED_STYLE, _background,
                 fg.sample_figure, ((2, fg.ball, 1.5, 6), (3, fg.cone, 0.6, 4),
                                    (4, fg.kite, 0.12, 2)), (192, 320))
BLOCKS = Family("blocks", blocks.BLOCKS_BOX_CATEGORIES, blocks.BLOCKS_STYLE,
                blocks.BLOCKS_SHIFTED_STYLE, blocks.background, blocks.figure,
                ((2, blocks.ring, 1.2, 5), (3, blocks.star, 0.5, 3),
                 (4, blocks.crate, 0.15, 2)), blocks.SIZES)
# Every name of distill.options.SYNTH_FAMILIES, in its order (tests/test_synth.py checks).
FAMILIES: dict[str, Family] = {f.name: f for f in (FIGURES, BLOCKS)}
_FAMILY_CODE = {"blocks": 1}  # a family's own random stream; never renumber


def family_of(name: str) -> Family:
    """The family called ``name``, or a ValueError naming the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown synthetic family {name!r}; expected one of "
                         f"{sorted(FAMILIES)}")
    return FAMILIES[name]


def _place_figures(rng: np.random.Generator, family: Family, style: fg.Style, w: int, h: int
                   ) -> list[fg.Figure]:
    """0-4 figures, each with enough keypoints in frame and not stacked on another."""
    placed: list[fg.Figure] = []
    for _ in range(int(rng.choice(len(_PERSON_COUNT_P), p=_PERSON_COUNT_P))):
        for _attempt in range(8):
            fig = family.figure(rng, style, w, h)
            visible = sum(_in_frame(x, y, w, h) for x, y in fig.keypoints.values())
            too_close = any(math.dist(fig.center, o.center) < 0.25 * max(fig.height, o.height)
                            for o in placed)
            if visible >= MIN_VISIBLE and not too_close:
                placed.append(fig)
                break
    return placed


def _in_frame(x: float, y: float, w: int, h: int) -> bool:
    # Judged on the stored (rounded) value, so that a point at 255.999 in a 256 px image
    # is not written as a visible 256.0.
    return 0 <= round(x, 2) < w and 0 <= round(y, 2) < h


def _keypoints(fig: fg.Figure, w: int, h: int) -> list[float]:
    """COCO ``[x, y, v] * K``: v=2 inside the frame, all zeros outside."""
    out: list[float] = []
    for name in KEYPOINT_NAMES:
        x, y = fig.keypoints[name]
        out += [round(x, 2) + 0.0, round(y, 2) + 0.0, 2] if _in_frame(x, y, w, h) else [0, 0, 0]
    return out


def render_scene(seed: int, split: str, index: int, min_side: int | None = None,
                 max_side: int | None = None, family: str = DEFAULT_SYNTH_FAMILY
                 ) -> tuple[Image.Image, list[Instance]]:
    """Draws image ``index`` of ``split``; returns it with its annotated instances.
    Sizes default to the family's."""
    if split not in SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    look = family_of(family)
    # The figures family keeps its original stream; another family gets its own.
    key = (seed, SPLIT_CODE[split], index) if family == "figures" else (
        seed, SPLIT_CODE[split], index, _FAMILY_CODE[family])
    rng = np.random.default_rng(np.random.SeedSequence(key))
    shifted = split == "shifted"
    style = look.shifted if shifted else look.normal
    low = look.sizes[0] if min_side is None else min_side
    high = look.sizes[1] if max_side is None else max_side
    w, h = (int(v) for v in rng.integers(low, high + 1, size=2))
    s = _SUPERSAMPLE
    canvas = look.background(rng, shifted, w, h).resize((w * s, h * s),
                                                        Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    fg.render(draw, fg.clutter(rng, style, w, h), s)
    items: list[tuple[int, tuple[fg.Prim, ...], fg.Figure | None]] = [
        (1, f.prims, f) for f in _place_figures(rng, look, style, w, h)]
    for cat_id, make, mean, cap in look.objects:
        for _ in range(min(int(rng.poisson(mean)), cap)):
            items.append((cat_id, tuple(make(rng, style, w, h)), None))
    instances: list[Instance] = []
    # Figures and objects interleave in depth, so either may hide part of the other.
    for i in rng.permutation(len(items)):
        cat_id, prims, fig = items[int(i)]
        fg.render(draw, prims, s)
        box = _mask_box(prims, w, h)
        if box is not None:
            kps = None if fig is None else _keypoints(fig, w, h)
            instances.append(Instance(cat_id, box, kps))
    # Persons first, then by category, so annotation ids read naturally.
    instances.sort(key=lambda inst: inst.category_id)
    return canvas.reduce(s), instances
