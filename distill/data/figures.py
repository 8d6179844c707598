"""Geometry and drawing of one synthetic stick figure, object or clutter stick.

Everything is first described as a list of :class:`Prim` in 1x image coordinates
(continuous, pixel ``i`` spans ``[i, i + 1)`` as in COCO) and only then rendered:
in colour onto the supersampled scene, and in white onto a per-instance mask whose
bounding box is the tight, clipped COCO box. Describing before drawing is what lets
the box follow exactly what was drawn (thick limbs, round caps, a ball's edge).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import ImageDraw

RGB = tuple[int, int, int]
Point = tuple[float, float]


@dataclass(frozen=True)
class Prim:
    """One drawing primitive.

    ``line``: a polyline through ``points`` with round caps and joints, ``width`` wide;
    ``ellipse``: ``points == (centre, (rx, ry))``; ``polygon``: filled vertices.
    ``in_box=False`` marks decoration that is drawn but not part of the box (a kite's tail).
    """

    kind: Literal["line", "ellipse", "polygon"]
    points: tuple[Point, ...]
    color: RGB
    width: float = 0.0
    in_box: bool = True


@dataclass(frozen=True)
class Style:
    """The look of one split; the "shifted" split only differs here."""

    limb_sat: tuple[float, float]
    limb_val: tuple[float, float]
    obj_sat: tuple[float, float]
    obj_val: tuple[float, float]
    limb_width: tuple[float, float]  # fraction of the figure's height
    lean_sd_deg: float
    lean_max_deg: float
    raised_arm_p: float  # chance that an arm is raised above the shoulder
    crouch_p: float
    clutter_mean: float  # Poisson mean of limb-like distractor sticks


NORMAL_STYLE = Style(limb_sat=(0.3, 0.9), limb_val=(0.35, 0.95), obj_sat=(0.5, 1.0),
                     obj_val=(0.55, 1.0), limb_width=(0.035, 0.055), lean_sd_deg=6.0,
                     lean_max_deg=15.0, raised_arm_p=0.25, crouch_p=0.1, clutter_mean=3.0)
# Duller figures and livelier poses on a dim street-like background (synth.py), as in
# other footage. The first version (near-white thin limbs on dark scanned backgrounds)
# hid the figures from a 40-image teacher (pseudo-keypoints 0% right). This one was set
# by a probe on seed 0 with a 500-iteration teacher, no test split involved: pseudo-
# keypoint precision 0.22 here against 0.38 in the normal look (box precision, probed
# with a duller draft of these colours, 0.43 against 0.63): a shift the teacher partly
# bridges, as the paper's Sports-1M frames are for a COCO model. Duller and thinner
# limbs on the normal background alone dropped pseudo-keypoints to 0.06.
SHIFTED_STYLE = Style(limb_sat=(0.25, 0.8), limb_val=(0.4, 0.9), obj_sat=(0.35, 0.8),
                      obj_val=(0.5, 0.95), limb_width=(0.035, 0.055), lean_sd_deg=10.0,
                      lean_max_deg=25.0, raised_arm_p=0.45, crouch_p=0.25, clutter_mean=4.0)


@dataclass(frozen=True)
class Figure:
    """A posed figure: keypoints by name (image coordinates) and what to draw."""

    keypoints: dict[str, Point]
    prims: tuple[Prim, ...]
    center: Point  # mid-hip
    height: float


def hsv(hue: float, sat: float, val: float) -> RGB:
    """HSV in [0, 1] to an 8-bit RGB triple."""
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, sat, val)
    return (round(r * 255), round(g * 255), round(b * 255))


def _shade(color: RGB, amount: float) -> RGB:
    """Towards white for ``amount > 0``, towards black for ``amount < 0``."""
    if amount >= 0:
        return tuple(round(c + (255 - c) * amount) for c in color)  # type: ignore[return-value]
    return tuple(round(c * (1 + amount)) for c in color)  # type: ignore[return-value]


def limb_color(rng: np.random.Generator, style: Style) -> RGB:
    """A colour from the split's limb palette (also used for the distractor sticks)."""
    return hsv(rng.uniform(), rng.uniform(*style.limb_sat), rng.uniform(*style.limb_val))


def _unit(angle: float, side: float) -> np.ndarray:
    """Direction ``angle`` radians away from straight down, mirrored outwards by ``side``."""
    return np.array([side * math.sin(angle), math.cos(angle)])


def sample_figure(rng: np.random.Generator, style: Style, img_w: int, img_h: int) -> Figure:
    """A frontal figure (its left side on the image's right) at a random pose and place.

    Local frame: origin at mid-hip, +y down, +x towards the image's right, lengths in
    units of the figure's height; it is then leaned, scaled and translated.
    """
    fig_h = rng.uniform(0.25, 0.9) * img_h

    def jit(base: float) -> float:  # proportions vary so figures are not clones
        return base * rng.uniform(0.88, 1.12)

    head_rx, head_ry, neck, torso = jit(0.055), jit(0.068), jit(0.035), jit(0.30)
    shoulder_w, hip_w = jit(0.24), jit(0.16)
    upper_arm, forearm, thigh, shin, foot = jit(0.16), jit(0.15), jit(0.23), jit(0.22), jit(0.06)
    width = rng.uniform(*style.limb_width)
    crouch = rng.uniform() < style.crouch_p

    local: dict[str, np.ndarray] = {}
    head_c = np.array([rng.normal(0, 0.01), -torso - neck - head_ry])
    local["nose"] = head_c + np.array([0.0, 0.25 * head_ry])
    feet: dict[str, np.ndarray] = {}
    for side_name, side in (("left", 1.0), ("right", -1.0)):
        shoulder = np.array([side * shoulder_w / 2, -torso])
        hip = np.array([side * hip_w / 2, 0.0])
        if rng.uniform() < style.raised_arm_p:
            abduct = math.radians(rng.uniform(70, 175))
        else:
            abduct = math.radians(rng.uniform(-5, 60))
        bend = math.radians(float(np.clip(rng.normal(0, 45), -135, 135)))
        # Foreshortening: an arm pointing at the viewer looks shorter.
        short = rng.uniform(0.6, 1.0, size=2) if rng.uniform() < 0.3 else np.ones(2)
        elbow = shoulder + upper_arm * short[0] * _unit(abduct, side)
        wrist = elbow + forearm * short[1] * _unit(abduct + bend, side)
        spread = math.radians(rng.uniform(-5, 28))
        knee_turn = math.radians(float(np.clip(rng.normal(0, 12), -35, 35)))
        thigh_len, shin_len = thigh, shin
        if crouch:  # thighs towards the viewer: short, knees apart, shins back in
            spread += math.radians(rng.uniform(10, 25))
            knee_turn = -spread * rng.uniform(0.6, 1.2)
            thigh_len *= rng.uniform(0.45, 0.8)
        knee = hip + thigh_len * _unit(spread, side)
        ankle = knee + shin_len * _unit(spread + knee_turn, side)
        foot_dir = math.radians(rng.uniform(50, 85))  # mostly sideways, a bit down
        feet[side_name] = ankle + foot * _unit(foot_dir, side)
        for joint, p in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist),
                         ("hip", hip), ("knee", knee), ("ankle", ankle)):
            local[f"{side_name}_{joint}"] = p

    lean = math.radians(float(np.clip(rng.normal(0, style.lean_sd_deg),
                                      -style.lean_max_deg, style.lean_max_deg)))
    rot = np.array([[math.cos(lean), -math.sin(lean)], [math.sin(lean), math.cos(lean)]])
    # Mid-hip anywhere that keeps some of the figure near the frame; partly outside is fine.
    center = np.array([rng.uniform(-0.1, 1.1) * img_w,
                       rng.uniform(0.45 * fig_h, img_h + 0.1 * fig_h)])

    def place(p: np.ndarray) -> Point:
        q = rot @ p * fig_h + center
        return (float(q[0]), float(q[1]))

    kp = {name: place(p) for name, p in local.items()}
    skin = limb_color(rng, style)
    shirt = hsv(rng.uniform(), rng.uniform(*style.limb_sat), rng.uniform(*style.limb_val))
    pants = hsv(rng.uniform(), rng.uniform(*style.limb_sat), rng.uniform(*style.limb_val) * 0.8)
    shoe = _shade(pants, -0.5)
    w = width * fig_h
    prims: list[Prim] = []
    # The figure's left limbs are a touch lighter and carry a small marker at the wrist and
    # ankle: enough to tell left from right, subtle enough that it has to be learned.
    for side_name, tint in (("right", 0.0), ("left", 0.2)):
        leg = _shade(pants, tint)
        prims.append(Prim("line", (kp[f"{side_name}_hip"], kp[f"{side_name}_knee"],
                                   kp[f"{side_name}_ankle"]), leg, w))
        prims.append(Prim("line", (kp[f"{side_name}_ankle"], place(feet[side_name])), shoe,
                          w * 0.8))
    prims.append(Prim("polygon", (kp["left_shoulder"], kp["right_shoulder"], kp["right_hip"],
                                  kp["left_hip"]), shirt))
    prims.append(Prim("line", (kp["left_shoulder"], kp["right_shoulder"]), shirt, w))
    for side_name, tint in (("right", 0.0), ("left", 0.2)):
        arm = _shade(skin, tint)
        prims.append(Prim("line", (kp[f"{side_name}_shoulder"], kp[f"{side_name}_elbow"],
                                   kp[f"{side_name}_wrist"]), arm, w))
    marker = _shade(skin, -0.55) if sum(skin) > 380 else _shade(skin, 0.6)
    for joint in ("left_wrist", "left_ankle"):
        prims.append(Prim("ellipse", (kp[joint], (0.3 * w, 0.3 * w)), marker))
    neck_top = place(head_c + np.array([0.0, head_ry * 0.8]))
    prims.append(Prim("line", (place(np.array([0.0, -torso])), neck_top), skin, w * 0.7))
    prims.append(Prim("ellipse", (place(head_c), (head_rx * fig_h, head_ry * fig_h)), skin))
    return Figure(kp, tuple(prims), (float(center[0]), float(center[1])), float(fig_h))


def _obj_color(rng: np.random.Generator, style: Style, hue: float | None = None) -> RGB:
    h = rng.uniform() if hue is None else hue
    return hsv(h, rng.uniform(*style.obj_sat), rng.uniform(*style.obj_val))


def ball(rng: np.random.Generator, style: Style, img_w: int, img_h: int) -> list[Prim]:
    """A shaded filled circle; its centre is inside the frame."""
    r = rng.uniform(0.022, 0.065) * min(img_w, img_h)
    c = (rng.uniform(0, img_w), rng.uniform(0, img_h))
    base = _obj_color(rng, style)
    lit = (c[0] - 0.12 * r, c[1] - 0.12 * r)  # stays inside the rim
    spot = (c[0] - 0.4 * r, c[1] - 0.4 * r)
    return [Prim("ellipse", (c, (r, r)), _shade(base, -0.35)),
            Prim("ellipse", (lit, (0.8 * r, 0.8 * r)), base, in_box=False),
            Prim("ellipse", (spot, (0.2 * r, 0.2 * r)), _shade(base, 0.6), in_box=False)]


def cone(rng: np.random.Generator, style: Style, img_w: int, img_h: int) -> list[Prim]:
    """An upright traffic cone: a triangle with a light band on a flat base."""
    b = rng.uniform(0.035, 0.09) * min(img_w, img_h)
    ht = b * rng.uniform(1.2, 1.8)
    cx, bottom = rng.uniform(0, img_w), rng.uniform(0.2 * img_h, img_h + 0.2 * ht)
    top = bottom - ht
    color = _obj_color(rng, style, hue=rng.uniform(-0.03, 0.14))

    def at(frac: float, side: float) -> Point:  # point on the outline ``frac`` down
        return (cx + side * b / 2 * frac, top + ht * frac)

    band = (at(0.4, -1), at(0.4, 1), at(0.6, 1), at(0.6, -1))
    plate = ((cx - 0.65 * b, bottom - 0.1 * ht), (cx + 0.65 * b, bottom - 0.1 * ht),
             (cx + 0.65 * b, bottom), (cx - 0.65 * b, bottom))
    return [Prim("polygon", plate, _shade(color, -0.45)),
            Prim("polygon", ((cx, top), at(0.92, 1), at(0.92, -1)), color),
            Prim("polygon", band, _shade(color, 0.75), in_box=False)]


def kite(rng: np.random.Generator, style: Style, img_w: int, img_h: int) -> list[Prim]:
    """A two-coloured diamond with spars and a wavy tail (the tail is not in its box)."""
    s = rng.uniform(0.05, 0.12) * min(img_w, img_h)
    c = np.array([rng.uniform(0, img_w), rng.uniform(0, 0.7 * img_h)])
    ang = math.radians(rng.uniform(-35, 35))
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])

    def at(x: float, y: float) -> Point:
        q = rot @ np.array([x, y]) * s + c
        return (float(q[0]), float(q[1]))

    top, right, bottom, left = at(0, -0.7), at(0.5, 0), at(0, 1.0), at(-0.5, 0)
    c1, c2 = _obj_color(rng, style), _obj_color(rng, style)
    spar = _shade(c1, -0.6)
    length = rng.uniform(1.5, 2.5)
    phase = rng.uniform(0, 2 * math.pi)
    tail = tuple(at(0.15 * math.sin(phase + 7 * t), 1.0 + length * t)
                 for t in np.linspace(0, 1, 12))
    return [Prim("polygon", (top, right, bottom), c1),
            Prim("polygon", (top, left, bottom), c2),
            Prim("line", (top, bottom), spar, 0.05 * s, in_box=False),
            Prim("line", (left, right), spar, 0.05 * s, in_box=False),
            Prim("line", tail, spar, max(1.0, 0.04 * s), in_box=False)]


def clutter(rng: np.random.Generator, style: Style, img_w: int, img_h: int) -> list[Prim]:
    """Unannotated sticks in limb colours and widths, some bent like an arm or a leg."""
    prims = []
    for _ in range(min(int(rng.poisson(style.clutter_mean)), 8)):
        fig_h = rng.uniform(0.25, 0.9) * img_h  # as if part of a figure this tall
        width = rng.uniform(*style.limb_width) * fig_h
        p0 = np.array([rng.uniform(-0.1, 1.1) * img_w, rng.uniform(-0.1, 1.1) * img_h])
        ang = rng.uniform(0, 2 * math.pi)
        pts = [p0, p0 + rng.uniform(0.12, 0.25) * fig_h * np.array([math.cos(ang),
                                                                    math.sin(ang)])]
        if rng.uniform() < 0.5:
            ang += math.radians(rng.uniform(-120, 120))
            pts.append(pts[-1] + rng.uniform(0.12, 0.25) * fig_h
                       * np.array([math.cos(ang), math.sin(ang)]))
        line = tuple((float(p[0]), float(p[1])) for p in pts)
        prims.append(Prim("line", line, limb_color(rng, style), width))
    return prims


def render(draw: ImageDraw.ImageDraw, prims: tuple[Prim, ...] | list[Prim], scale: int,
           mask: bool = False) -> None:
    """Draws ``prims`` at ``scale`` times their coordinates.

    With ``mask=True`` only the ``in_box`` primitives are drawn, in 255, for the box.
    """
    def xy(p: Point) -> tuple[float, float]:
        # PIL's integer coordinate ``i`` is the pixel centred on ``i + 0.5``.
        return (p[0] * scale - 0.5, p[1] * scale - 0.5)

    for prim in prims:
        if mask and not prim.in_box:
            continue
        fill: int | RGB = 255 if mask else prim.color
        if prim.kind == "ellipse":
            (cx, cy), (rx, ry) = xy(prim.points[0]), prim.points[1]
            rx, ry = max(rx * scale, 0.5), max(ry * scale, 0.5)
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)
        elif prim.kind == "polygon":
            draw.polygon([xy(p) for p in prim.points], fill=fill)
        else:
            pts = [xy(p) for p in prim.points]
            w = max(1, round(prim.width * scale))
            draw.line(pts, fill=fill, width=w, joint="curve")
            r = w / 2
            for x, y in (pts[0], pts[-1]):  # round caps, so limbs meet without notches
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
