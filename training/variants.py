"""The experiment's models, one table: what each learns from, the flag that turns it
on, and its row in the report.

The pipeline (``training.pipeline.run_pipeline``) trains the rows that apply, in this
order, and evaluates them; the report (``training.report``) lists them in this order
under their labels. A new variant is one entry here (plus, for a new kind of
pseudo-label, its switch in :meth:`Variant.applies` and its flag in
``training.experiment_config``). Torch-free: the report reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from distill.options import Pooling, Task

if TYPE_CHECKING:
    from training.experiment_config import ExperimentConfig

Split = Literal["unlabeled", "shifted"]


@dataclass(frozen=True)
class Variant:
    """One model of a (task, seed) pipeline.

    ``split`` None: trained on the labeled split only (teacher, baseline); otherwise on
    labeled images mixed with ``split``'s images, labeled by ``labeler`` (a row above)
    with ``pooling`` and, with ``ignore``, the unsure predictions as ignore regions
    (``--ignore-factor``), or with the split's true labels (``oracle``).
    """

    name: str  # the row, and the stem of the model's files
    label: str  # the report's words
    split: Split | None = None
    labeler: str = "teacher"
    pooling: Pooling = "nms"
    ignore: bool = False
    oracle: bool = False

    @property
    def pseudo(self) -> str:
        """The stem of its pseudo-label file: ``student-raw`` -> ``pseudo-raw``."""
        return "pseudo" + self.name.removeprefix("student")

    @property
    def plain(self) -> str:
        """The same variant without ignore regions, whose predictions it reuses."""
        return self.name.replace("-ignore", "")

    def applies(self, cfg: ExperimentConfig, task: Task) -> bool:
        """Whether the settings ask for this model on ``task``."""
        return ((self.pooling != "raw" or (cfg.compare_pooling and task == "boxes"))
                and (not self.ignore or cfg.ignore_factor > 0)
                and (self.split != "shifted" or cfg.shifted > 0)
                and (self.labeler == "teacher" or cfg.rounds >= 2)
                and (not self.oracle or cfg.oracle))


VARIANTS: tuple[Variant, ...] = (
    Variant("teacher", "teacher (labeled only)"),
    Variant("baseline", "baseline (labeled only, student's budget)"),
    Variant("student", "student (labeled + pseudo-labels)", "unlabeled"),
    Variant("student-raw", "student, box pseudo-labels pooled raw (Detectron)", "unlabeled",
            pooling="raw"),
    Variant("student-ignore", "student, unsure pseudo-labels as ignore regions", "unlabeled",
            ignore=True),
    Variant("student-raw-ignore", "student, pooled raw and unsure ones as ignore regions",
            "unlabeled", pooling="raw", ignore=True),
    Variant("student-shifted", "student (+ pseudo-labels of shifted images)", "shifted"),
    Variant("student-shifted-ignore",
            "student (shifted), unsure pseudo-labels as ignore regions", "shifted",
            ignore=True),
    # Round 2: the round-1 student is the teacher.
    Variant("student-round2", "student, round 2 (student as teacher)", "unlabeled",
            labeler="student"),
    Variant("student-oracle", "student taught the true labels (oracle, diagnostic)",
            "unlabeled", oracle=True),
    Variant("student-shifted-oracle",
            "student taught the shifted images' true labels (oracle)", "shifted",
            oracle=True),
)
BY_NAME = {v.name: v for v in VARIANTS}


def oracle_of(name: str) -> str | None:
    """The oracle row taught the true labels of the images that student ``name`` learns
    from (None for the labeled-only rows and the oracles themselves)."""
    variant = BY_NAME[name]
    if variant.split is None or variant.oracle:
        return None
    return next(v.name for v in VARIANTS if v.oracle and v.split == variant.split)
