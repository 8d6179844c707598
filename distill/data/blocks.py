"""The second synthetic family, "blocks": a look no setting was chosen on.

Defaults are chosen on the "figures" family (``synth.py``); they are confirmed on
this one, which differs in everything but the task: figures built of straight,
square-ended blocks with a square head and no wrist or ankle markers (the figure's
left limbs carry a dark band instead), livelier poses (more lean, more raised arms,
more crouches), other box objects (rings, stars, crates, with their own
frequencies), tiled backgrounds instead of gradients and blotches, and wider image
sizes. The persons keep the 13 keypoints of :data:`synth.KEYPOINT_NAMES`, so
keypoint teachers and flip maps work unchanged; the box categories are new.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from distill.data import figures as fg

BLOCKS_STYLE = fg.Style(limb_sat=(0.4, 1.0), limb_val=(0.3, 0.9), obj_sat=(0.45, 0.95),
                        obj_val=(0.4, 0.95), limb_width=(0.05, 0.08), lean_sd_deg=12.0,
                        lean_max_deg=30.0, raised_arm_p=0.5, crouch_p=0.3, clutter_mean=2.0)
# Its shifted split: faded colours under a blur and a colour cast, as if filmed elsewhere.
BLOCKS_SHIFTED_STYLE = replace(BLOCKS_STYLE, limb_sat=(0.2, 0.6), obj_sat=(0.2, 0.6),
                               clutter_mean=3.0)

BLOCKS_BOX_CATEGORIES: list[dict[str, object]] = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 2, "name": "ring", "supercategory": "shape"},
    {"id": 3, "name": "star", "supercategory": "shape"},
    {"id": 4, "name": "crate", "supercategory": "shape"},
]
SIZES = (224, 384)  # min and max side: wider and more elongated than the figures' 192-320


def figure(rng: np.random.Generator, style: fg.Style, img_w: int, img_h: int) -> fg.Figure:
    """A figure posed by the shared skeleton sampler, drawn as blocks."""
    posed = fg.sample_figure(rng, style, img_w, img_h)
    kp = posed.keypoints
    w = rng.uniform(*style.limb_width) * posed.height
    skin, shirt, pants = (fg.limb_color(rng, style) for _ in range(3))
    band = (20, 20, 20) if sum(skin) > 300 else (235, 235, 235)
    prims: list[fg.Prim] = [fg.Prim("polygon", (kp["left_shoulder"], kp["right_shoulder"],
                                                kp["right_hip"], kp["left_hip"]), shirt)]
    for side in ("right", "left"):
        for a, b, color in (("hip", "knee", pants), ("knee", "ankle", pants),
                            ("shoulder", "elbow", skin), ("elbow", "wrist", skin)):
            prims.append(_block(kp[f"{side}_{a}"], kp[f"{side}_{b}"], w, color))
        if side == "left":  # left from right: a dark band across the forearm and the shin
            for a, b in (("elbow", "wrist"), ("knee", "ankle")):
                prims.append(_block(_lerp(kp[f"left_{a}"], kp[f"left_{b}"], 0.45),
                                    _lerp(kp[f"left_{a}"], kp[f"left_{b}"], 0.6), w * 1.02,
                                    band, in_box=False))
    neck = _lerp(kp["left_shoulder"], kp["right_shoulder"], 0.5)
    head = (kp["nose"][0] + (kp["nose"][0] - neck[0]) * 0.1,
            kp["nose"][1] + (kp["nose"][1] - neck[1]) * 0.1)
    prims.append(_block(neck, kp["nose"], w * 0.8, skin))
    half = 0.065 * posed.height
    prims.append(fg.Prim("polygon", ((head[0] - half, head[1] - half),
                                     (head[0] + half, head[1] - half),
                                     (head[0] + half, head[1] + half),
                                     (head[0] - half, head[1] + half)), skin))
    return fg.Figure(kp, tuple(prims), posed.center, posed.height)


def ring(rng: np.random.Generator, style: fg.Style, img_w: int, img_h: int) -> list[fg.Prim]:
    """A thick circular outline (its hole shows the background)."""
    r = rng.uniform(0.03, 0.08) * min(img_w, img_h)
    c = (rng.uniform(0, img_w), rng.uniform(0, img_h))
    points = tuple((c[0] + r * math.cos(t), c[1] + r * math.sin(t))
                   for t in np.linspace(0, 2 * math.pi, 33))
    return [fg.Prim("line", points, _color(rng, style), width=r * rng.uniform(0.25, 0.45))]


def star(rng: np.random.Generator, style: fg.Style, img_w: int, img_h: int) -> list[fg.Prim]:
    """A five-pointed star at a random turn."""
    r = rng.uniform(0.035, 0.09) * min(img_w, img_h)
    c, turn = (rng.uniform(0, img_w), rng.uniform(0, img_h)), rng.uniform(0, 2 * math.pi)
    radii = [r if k % 2 == 0 else 0.45 * r for k in range(10)]  # tips and notches
    points = tuple((c[0] + rr * math.cos(turn + k * math.pi / 5),
                    c[1] + rr * math.sin(turn + k * math.pi / 5)) for k, rr in enumerate(radii))
    return [fg.Prim("polygon", points, _color(rng, style))]


def crate(rng: np.random.Generator, style: fg.Style, img_w: int, img_h: int) -> list[fg.Prim]:
    """A square box with diagonal braces, standing on the ground half of the image."""
    s = rng.uniform(0.06, 0.14) * min(img_w, img_h)
    x, y = rng.uniform(-0.2 * s, img_w - 0.8 * s), rng.uniform(0.4 * img_h, img_h - 0.5 * s)
    color = _color(rng, style)
    corners = ((x, y), (x + s, y), (x + s, y + s), (x, y + s))
    brace = (color[0] // 2, color[1] // 2, color[2] // 2)
    return [fg.Prim("polygon", corners, color),
            fg.Prim("line", (corners[0], corners[2]), brace, 0.08 * s, in_box=False),
            fg.Prim("line", (corners[1], corners[3]), brace, 0.08 * s, in_box=False)]


def background(rng: np.random.Generator, shifted: bool, w: int, h: int) -> Image.Image:
    """Tiles of two colours (a floor or a wall), a few wide bands, grain; shifted: faded,
    blurred and colour-cast."""
    c0 = np.asarray(fg.hsv(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.9)),
                    np.float32)
    c1 = np.clip(c0 + rng.normal(0, 40, 3), 0, 255).astype(np.float32)
    tile = int(rng.integers(12, 48))
    yy, xx = np.mgrid[0:h, 0:w]
    checker = (((xx // tile) + (yy // tile)) % 2).astype(np.float32)[..., None]
    arr = c0 * (1 - checker) + c1 * checker
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        y0 = rng.uniform(0, h)
        color = fg.hsv(rng.uniform(), rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.9))
        draw.rectangle((0, y0, w, y0 + rng.uniform(0.05, 0.2) * h), fill=color)
    if shifted:
        img = img.filter(ImageFilter.GaussianBlur(1.5))
        arr = np.asarray(img, np.float32) * 0.6 + np.asarray(
            fg.hsv(rng.uniform(0.05, 0.15), 0.6, 0.8), np.float32) * 0.4
    else:
        arr = np.asarray(img, np.float32)
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(rng.uniform(3, 8))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _color(rng: np.random.Generator, style: fg.Style) -> fg.RGB:
    return fg.hsv(rng.uniform(), rng.uniform(*style.obj_sat), rng.uniform(*style.obj_val))


def _lerp(a: fg.Point, b: fg.Point, t: float) -> fg.Point:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def _block(a: fg.Point, b: fg.Point, width: float, color: fg.RGB, in_box: bool = True
           ) -> fg.Prim:
    """A square-ended bar from ``a`` to ``b``, ``width`` wide, reaching ``width / 2`` past
    each end (so joints overlap without round caps)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = max(math.hypot(dx, dy), 1e-6)
    ux, uy = dx / length, dy / length
    half = width / 2
    a2, b2 = (a[0] - ux * half, a[1] - uy * half), (b[0] + ux * half, b[1] + uy * half)
    nx, ny = -uy * half, ux * half
    return fg.Prim("polygon", ((a2[0] + nx, a2[1] + ny), (b2[0] + nx, b2[1] + ny),
                               (b2[0] - nx, b2[1] - ny), (a2[0] - nx, a2[1] - ny)), color,
                   in_box=in_box)
