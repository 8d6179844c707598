"""The method's option vocabularies, the TTA preset table, the synthetic families, and
the inference options with the flat names flags and settings give them.

Argparse ``choices``, pydantic settings, the job contract, the API's form fields and
``GET /options`` take their allowed values from here (``get_args`` of a ``Literal``, or
a table's keys), so a new value is added in one place. Two open sets have their table
beside their code: export formats (``distill.exports.formats``) and the experiment's
variants (``training.variants``). Pure Python: the API imports this module without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

from distill.errors import ConfigError

Task = Literal["keypoints", "boxes"]
TASKS: tuple[Task, ...] = get_args(Task)

# The model zoo's architectures and the task each does (None: "tiny" does both); the
# builders live in distill.models.zoo, which needs torch.
ARCH_TASKS: dict[str, Task | None] = {
    "tiny": None,
    "keypointrcnn_resnet50_fpn": "keypoints",
    "fasterrcnn_resnet50_fpn": "boxes",
    "fasterrcnn_resnet50_fpn_v2": "boxes",
    "fasterrcnn_mobilenet_v3_large_fpn": "boxes",
}
ARCHITECTURES: tuple[str, ...] = tuple(ARCH_TASKS)
# Teachers run from ONNX exports (distill.teachers.onnx_family): imported, never trained here.
ONNX_ARCH_TASKS: dict[str, Task | None] = {"yolo-onnx": None, "rtdetr-onnx": "boxes"}
ONNX_ARCHITECTURES: tuple[str, ...] = tuple(ONNX_ARCH_TASKS)

# The synthetic data's looks: settings are chosen on "figures" and confirmed on "blocks". Each
# one's drawing lives in distill.data.synth (FAMILIES), which needs numpy.
SynthFamily = Literal["figures", "blocks"]
SYNTH_FAMILIES: tuple[SynthFamily, ...] = get_args(SynthFamily)
DEFAULT_SYNTH_FAMILY: SynthFamily = "figures"

# How pooled box detections are merged: NMS + box voting (Detectron) or weighted boxes fusion.
Fusion = Literal["vote", "wbf"]
FUSIONS: tuple[Fusion, ...] = get_args(Fusion)

# What box fusion pools: every transform's raw detections (per-class regressed boxes above
# the score floor, before the detector's NMS and top-k, as Detectron's im_detect_bbox_aug),
# or each transform's final, NMS-ed detections.
Pooling = Literal["raw", "nms"]
POOLINGS: tuple[Pooling, ...] = get_args(Pooling)
DEFAULT_POOLING: dict[Fusion, Pooling] = {"vote": "raw", "wbf": "nms"}

# Box-voting score of a kept box: its own (ID), the voters' mean (AVG), IoU-weighted mean.
Scoring = Literal["ID", "AVG", "IOU_AVG"]
SCORINGS: tuple[Scoring, ...] = get_args(Scoring)

# How the per-transform keypoint heatmap logits are combined (Detectron's HM_AVG / HM_MAX).
Combine = Literal["avg", "max"]
COMBINES: tuple[Combine, ...] = get_args(Combine)
# Detectron's TEST.KPS_AUG.AREA_TH: under size-dependent heatmap selection an RoI is "small"
# below 180^2 pixels of the ORIGINAL image (detectron/core/config.py; its test-time-aug
# example config uses 150^2). The default of InferenceOptions.size_dependent_area.
AREA_TH = 180.0 ** 2



@dataclass(frozen=True)
class PresetSpec:
    """A named transform set: shorter-side ``values`` (factors of the teacher's base scale
    when ``relative``, else pixels), each also mirrored when ``flip``."""

    values: tuple[float, ...]
    relative: bool
    flip: bool
    description: str

    @property
    def passes(self) -> int:
        """Forward passes per image."""
        return len(self.values) * (2 if self.flip else 1)


# Detectron's keypoint test-time augmentation scales; the paper picked them on validation AP.
PAPER_SCALES = tuple(float(s) for s in range(400, 1201, 100))
# The named transform sets, ONE table: distill.tta.transforms.parse_preset builds them,
# the CLI and the upload form list them, GET /options serves them to the page. A new
# preset is one entry here.
TTA_PRESETS: dict[str, PresetSpec] = {
    "identity": PresetSpec((1.0,), True, False, "the teacher's own test size"),
    "flip": PresetSpec((1.0,), True, True, "identity, mirrored"),
    "standard": PresetSpec((0.75, 1.0, 1.25), True, True,
                           "x0.75, x1, x1.25 of the base scale, each with and without flip"),
    "paper": PresetSpec(PAPER_SCALES, False, True,
                        "400..1200 px step 100, each with and without flip (the paper's set)"),
    "paper-relative": PresetSpec(tuple(s / 800 for s in PAPER_SCALES), True, True,
                                 "the paper's set as factors (0.5..1.5) of the base scale, "
                                 "for small models"),
}
PRESETS: tuple[str, ...] = tuple(TTA_PRESETS)

DEFAULT_TTA = "standard"
DEFAULT_MAX_PIXELS = 50_000_000  # decompression-bomb guard for any decoded image
DEFAULT_BATCH_SIZE = 4  # images per forward pass
# The automatic keypoint cap: calibration keeps about the labeled mean instances per image,
# so 4x that (and never fewer than 10) leaves crowded images ample room; see
# docs/BENCHMARKS.md for what it changed in the pseudo-label files (nothing measured).
KEYPOINT_CAP_FACTOR = 4.0
KEYPOINT_CAP_MIN = 10


def check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raises :class:`ConfigError` naming ``what`` and the allowed values."""
    if value not in allowed:
        raise ConfigError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")


def check_unit_interval(name: str, value: float) -> None:
    """Raises :class:`ConfigError` unless ``value`` lies in [0, 1] (the fusion thresholds;
    ``distill.fusion`` checks its functions' arguments with it too)."""
    # Written so that NaN fails too (every comparison with NaN is False).
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}")


@dataclass(frozen=True)
class FusionParams:
    """How pooled detections are merged (Detectron's defaults); checked once, here."""

    method: Fusion = "vote"
    nms_threshold: float = 0.5
    vote_threshold: float = 0.8
    scoring: Scoring = "ID"
    wbf_iou_threshold: float = 0.55
    max_detections: int = 100
    # None: DEFAULT_POOLING[method]. Voting pools raw, as Detectron (its pseudo-labels and
    # students scored at least as well as the NMS-ed pool's; docs/RESULTS.md, Runs 5 and
    # 6); weighted boxes fusion expects one box per transform and object, so only "nms".
    pooling: Pooling | None = None
    # Raw pooling: at most this many detections per transform and image (the best
    # scoring), which bounds the pool's memory (a detector gives up to 1000 RoIs x classes).
    raw_pool_cap: int = 1000

    def __post_init__(self) -> None:
        check_choice("fusion", self.method, FUSIONS)
        if self.pooling is not None:
            check_choice("box pooling", self.pooling, POOLINGS)
        if self.method == "wbf" and self.pooled == "raw":
            raise ConfigError("weighted boxes fusion takes each transform's final detections "
                              "(box pooling 'nms'); raw pooling is for voting")
        if self.raw_pool_cap < 1:
            raise ConfigError(f"raw_pool_cap must be >= 1, got {self.raw_pool_cap}")
        check_choice("vote scoring", self.scoring, SCORINGS)
        for name in ("nms_threshold", "vote_threshold", "wbf_iou_threshold"):
            check_unit_interval(name, getattr(self, name))
        if self.max_detections < 1:
            raise ConfigError(f"max_detections must be >= 1, got {self.max_detections}")

    @property
    def pooled(self) -> Pooling:
        """What is pooled: the pooling given, else the method's default (so that a copy
        with another method, as a job's fusion, gets that method's default)."""
        return self.pooling or DEFAULT_POOLING[self.method]


@dataclass(frozen=True)
class InferenceOptions:
    """How a teacher is run: the one object that travels from the CLI or the settings to
    :func:`distill.tta.predictor.build_predictor`."""

    tta: str = DEFAULT_TTA
    fusion: FusionParams = field(default_factory=FusionParams)
    combine: Combine = "avg"
    size_dependent: bool = False
    # Size-dependent selection: RoIs under this area (original-image pixels) are "small".
    size_dependent_area: float = AREA_TH
    device: str = "cpu"
    half: bool = False
    # Images per forward pass; None: 1 on a CPU, where a batch only adds padding (images
    # of different sizes are padded to the largest; measured in docs/BENCHMARKS.md), and
    # DEFAULT_BATCH_SIZE on a GPU.
    batch_size: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    # Keypoint teachers: detections per image that get the keypoint ensemble. "auto":
    # KEYPOINT_CAP_FACTOR x the labeled instances per image (at least KEYPOINT_CAP_MIN);
    # 0: every detection the detector returns.
    keypoint_cap: int | Literal["auto"] = "auto"
    # Keypoint teachers under calibrated selection: detections scoring below this
    # fraction of the job's running threshold estimate get no keypoint ensemble and are
    # not stored (distill/score_floor.py); 0: off.
    keypoint_floor: float = 0.5

    def __post_init__(self) -> None:
        check_choice("heatmap combine", self.combine, COMBINES)
        if not 0.0 <= self.keypoint_floor <= 1.0:
            raise ConfigError(f"keypoint_floor must lie in [0, 1], got {self.keypoint_floor!r}")
        if self.keypoint_cap != "auto" and (not isinstance(self.keypoint_cap, int)
                                            or self.keypoint_cap < 0):
            raise ConfigError(f"keypoint_cap must be 'auto' or an integer >= 0, "
                              f"got {self.keypoint_cap!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")

    def describe(self) -> dict[str, Any]:
        """JSON form for the output's info block."""
        fusion = {**asdict(self.fusion), "pooling": self.fusion.pooled}
        return {"tta": self.tta, "fusion": fusion, "heatmap_combine": self.combine,
                "size_dependent": self.size_dependent,
                "size_dependent_area": self.size_dependent_area,
                "keypoint_cap": self.keypoint_cap, "keypoint_floor": self.keypoint_floor}


# The flat names that command-line flags (``--vote-iou``) and service settings
# (``DISTILL_VOTE_IOU``) give the inference options, and where each lives in
# InferenceOptions ("fusion.x": a FusionParams field). One table, so that a default
# changes in InferenceOptions / FusionParams alone and every process maps alike.
INFERENCE_FLAGS: dict[str, str] = {
    "tta": "tta", "fusion": "fusion.method", "vote_iou": "fusion.vote_threshold",
    "vote_scoring": "fusion.scoring", "box_pooling": "fusion.pooling",
    "heatmap_combine": "combine", "size_dependent": "size_dependent",
    "size_dependent_area": "size_dependent_area", "device": "device", "half": "half",
    "batch_size": "batch_size", "keypoint_cap": "keypoint_cap",
    "keypoint_floor": "keypoint_floor",
}


def inference_defaults() -> dict[str, Any]:
    """The default of every flat inference name (from InferenceOptions / FusionParams)."""
    d = InferenceOptions()
    return {flat: _get(d, path) for flat, path in INFERENCE_FLAGS.items()}


def inference_options_from(flat: dict[str, Any], base: InferenceOptions | None = None,
                           **fixed: Any) -> InferenceOptions:
    """``base`` (default: the defaults) with every flat name of ``flat`` that is not None
    laid over it; other keys of ``flat`` are ignored. ``fixed`` values (flat names) win."""
    base = base or InferenceOptions()
    top: dict[str, Any] = {}
    fusion: dict[str, Any] = {}
    for name, value in {**flat, **fixed}.items():
        path = INFERENCE_FLAGS.get(name)
        if path is None or value is None:
            continue
        if path.startswith("fusion."):
            fusion[path.removeprefix("fusion.")] = value
        else:
            top[path] = value
    return replace(base, fusion=replace(base.fusion, **fusion), **top)


def _get(options: InferenceOptions, path: str) -> Any:
    head, _, tail = path.partition(".")
    value = getattr(options, head)
    return getattr(value, tail) if tail else value
