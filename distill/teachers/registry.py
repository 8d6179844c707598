"""Teacher families by architecture: the built-in ones and the ``distill.teachers`` plug-ins.

A package provides a family by declaring an entry point in the group
``distill.teachers`` whose object is a :class:`~distill.teachers.interface.TeacherFamily`
(or a class / function returning one when called without arguments)::

    # pyproject.toml of the plug-in package
    [project.entry-points."distill.teachers"]
    mydet = "mydet.teacher:FAMILY"

Its architectures then work everywhere a teacher does: ``distill teacher import --arch``,
``distill annotate``, ``distill eval``, the worker. Built-in families come first, so a
plug-in cannot replace ``tiny`` or ``yolo-onnx``. A plug-in that fails to load is only
reported when an architecture is not found elsewhere, so it never breaks other teachers.

Importing this module imports no torch: families are loaded when first asked for.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from distill.errors import ConfigError
from distill.teachers.interface import TeacherFamily

if TYPE_CHECKING:
    from torch import Tensor

    from distill.card import ModelCard, Task
    from distill.teachers.interface import Detector

ENTRY_POINT_GROUP = "distill.teachers"
_BUILTIN = ("distill.teachers.rcnn:FAMILY", "distill.teachers.onnx_family:FAMILY")


def _as_family(obj: Any, origin: str) -> TeacherFamily:
    if not isinstance(obj, TeacherFamily) and callable(obj):
        obj = obj()
    if not isinstance(obj, TeacherFamily):
        raise ConfigError(f"{origin} is not a teacher family (it needs name, architectures(), "
                          "load() and import_teacher(); see distill.teachers.interface)")
    return obj


@cache
def builtin_families() -> tuple[TeacherFamily, ...]:
    """torchvision's R-CNNs and the ONNX exports."""
    out = []
    for spec in _BUILTIN:
        module, attr = spec.split(":")
        out.append(_as_family(getattr(importlib.import_module(module), attr), spec))
    return tuple(out)


@cache
def plugin_families() -> tuple[tuple[TeacherFamily, ...], tuple[str, ...]]:
    """The installed plug-ins' families, and one line per plug-in that failed to load."""
    found: list[TeacherFamily] = []
    broken: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        origin = f"teacher plug-in {ep.name!r} ({ep.value})"
        try:
            found.append(_as_family(ep.load(), origin))
        except Exception as exc:  # a broken plug-in must not break the other teachers
            broken.append(f"{origin} failed to load: {exc}")
    return tuple(found), tuple(broken)


def known_architectures() -> dict[str, Task | None]:
    """Every architecture a teacher can have here, with its task (None: either)."""
    archs: dict[str, Task | None] = {}
    for family in (*builtin_families(), *plugin_families()[0]):
        for arch, task in family.architectures().items():
            archs.setdefault(arch, task)
    return archs


def family_for(arch: str) -> TeacherFamily:
    """The family that runs ``arch``; a :class:`ConfigError` listing the known ones if none."""
    for family in builtin_families():
        if arch in family.architectures():
            return family
    plugins, broken = plugin_families()
    for family in plugins:
        if arch in family.architectures():
            return family
    hint = f" ({'; '.join(broken)})" if broken else ""
    raise ConfigError(f"unknown architecture {arch!r}; known: "
                      f"{', '.join(known_architectures())}{hint}")


def load_detector(card: ModelCard, tensors: dict[str, Tensor]) -> Detector:
    """The detector of a checkpoint's card and tensors, built by its family."""
    return family_for(card.arch).load(card, tensors)
