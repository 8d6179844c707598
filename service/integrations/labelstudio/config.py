"""A Label Studio project's labeling config, read for pre-annotation: which tags the
predictions fill and which label value each teacher category and keypoint becomes.

The conventions are those of Label Studio's YOLO example backend
(``label_studio_ml/examples/yolo``), so configs written for it work here:

- ``<RectangleLabels name=".." toName="image">``: a category becomes the ``<Label>``
  whose ``predicted_values="a,b"`` lists its name, else the one whose ``value`` is its
  name (exactly, then ignoring case); other categories are left out.
- ``<KeyPointLabels>``: keypoint ``j`` of category ``c`` becomes the ``<Label>`` with
  ``predicted_values="c" model_index="j"``, else the one whose ``value`` is the
  keypoint's name. Keypoints link (``parentID``) to their instance's box when a
  RectangleLabels tag on the same image labels the category.
- On either tag: ``model_score_threshold`` (or the example's ``score_threshold``) is an
  explicit instance-score threshold instead of the calibrated one; on KeyPointLabels
  ``model_point_threshold`` drops keypoints scored under it (scores in [0, 1]: the
  sigmoid of the heatmap logit) and ``model_point_size`` is a point's drawn size in
  pixels; ``model_skip="true"`` leaves a tag alone.

The XML is the caller's: a config with a DTD (where entities are declared) is refused,
so nothing is expanded or fetched.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from distill.errors import ConfigError
from distill.exports._common import keypoint_probability
from distill.exports.labelstudio import RegionPlan

MAX_CONFIG_CHARS = 1_000_000


@dataclass(frozen=True)
class LabelTag:
    """One ``<Label>`` of a control tag."""

    value: str
    predicted: tuple[str, ...] = ()  # predicted_values
    index: int | None = None  # model_index


@dataclass(frozen=True)
class Control:
    """A RectangleLabels or KeyPointLabels tag."""

    name: str  # from_name
    labels: tuple[LabelTag, ...]
    score_threshold: float | None = None
    point_threshold: float = 0.0
    point_size_px: float | None = None


@dataclass(frozen=True)
class LabelingConfig:
    """The tags that predictions fill, on one ``<Image>``."""

    image: str  # the Image tag's name (to_name)
    data_key: str  # the task's data field holding the image (its value="$key")
    boxes: Control | None
    keypoints: Control | None

    @property
    def score_threshold(self) -> float | None:
        """The explicit instance-score threshold, if a tag gives one (the lowest)."""
        given = [c.score_threshold for c in (self.boxes, self.keypoints)
                 if c is not None and c.score_threshold is not None]
        return min(given) if given else None

    def plan(self, width: int) -> RegionPlan:
        """How to turn a COCO image of ``width`` pixels into this config's regions."""
        boxes, points = self.boxes, self.keypoints
        size = points.point_size_px if points else None
        return RegionPlan(
            image=self.image, boxes=boxes.name if boxes else None,
            keypoints=points.name if points else None,
            box_label=(lambda cat: _box_label(boxes, str(cat["name"]))) if boxes else _none,
            point_label=((lambda cat, j, name: _point_label(points, str(cat["name"]), j, name))
                         if points else _none),
            min_score=self.score_threshold if self.score_threshold is not None else -math.inf,
            min_point_score=points.point_threshold if points else -math.inf,
            point_score=keypoint_probability,
            **({} if size is None else {"point_size": 100.0 * size / max(1, width)}))


def _none(*_: Any) -> None:
    return None


def _by_name(labels: tuple[LabelTag, ...], name: str) -> str | None:
    for same in (lambda v: v == name, lambda v: v.casefold() == name.casefold()):
        found = next((t.value for t in labels if same(t.value)), None)
        if found is not None:
            return found
    return None


def _box_label(control: Control, category: str) -> str | None:
    listed = next((t.value for t in control.labels if category in t.predicted), None)
    return listed if listed is not None else _by_name(control.labels, category)


def _point_label(control: Control, category: str, j: int, name: str) -> str | None:
    indexed = next((t.value for t in control.labels
                    if t.index == j and category in t.predicted), None)
    return indexed if indexed is not None else _by_name(control.labels, name)


@lru_cache(maxsize=64)
def parse_config(xml: str) -> LabelingConfig:
    """The config's box and keypoint tags (the first of each on the first image that has
    any); a :class:`ConfigError` saying what is missing or malformed."""
    if len(xml) > MAX_CONFIG_CHARS:
        raise ConfigError(f"labeling config of {len(xml)} characters; at most "
                          f"{MAX_CONFIG_CHARS}")
    if "<!" in xml.replace("<![CDATA[", "").replace("<!--", ""):
        raise ConfigError("labeling config with a DTD or entity declaration refused")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ConfigError(f"labeling config is not XML: {exc}") from exc
    images = {e.get("name"): e.get("value", "") for e in root.iter()
              if e.tag.lower() == "image" and e.get("name")}
    found: dict[str, tuple[str, Control]] = {}
    for e in root.iter():
        kind = e.tag.lower()
        target = (e.get("toName") or e.get("toname") or "").split(",")[0].strip()
        if kind not in ("rectanglelabels", "keypointlabels") or kind in found or \
                target not in images or _true(e.get("model_skip")) or not e.get("name"):
            continue
        found[kind] = (target, _control(e))
    if not found:
        raise ConfigError("the labeling config has no RectangleLabels or KeyPointLabels tag "
                          "on an Image: nothing this service predicts fits it")
    image = (found.get("rectanglelabels") or found["keypointlabels"])[0]
    value = images[image] or ""
    if not value.startswith("$") or len(value) < 2:
        raise ConfigError(f"Image tag {image!r} has value {value!r}; expected '$field'")
    pick = {k: c for k, (t, c) in found.items() if t == image}
    return LabelingConfig(image, value[1:], pick.get("rectanglelabels"),
                          pick.get("keypointlabels"))


def _control(e: ET.Element) -> Control:
    labels = []
    for label in e.iter():
        if label.tag.lower() != "label" or label.get("value") is None:
            continue
        predicted = tuple(v.strip() for v in (label.get("predicted_values") or "").split(",")
                          if v.strip())
        index = label.get("model_index")
        labels.append(LabelTag(str(label.get("value")), predicted,
                               int(index) if index and index.strip().isdigit() else None))
    threshold = e.get("model_score_threshold") or e.get("score_threshold")
    return Control(str(e.get("name")), tuple(labels),
                   score_threshold=_number(e, threshold, "model_score_threshold"),
                   point_threshold=_number(e, e.get("model_point_threshold"),
                                           "model_point_threshold") or 0.0,
                   point_size_px=_number(e, e.get("model_point_size"), "model_point_size"))


def _number(e: ET.Element, raw: str | None, what: str) -> float | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"tag {e.get('name')!r} has {what}={raw!r}; expected a number >= 0")
    return value


def _true(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes")
