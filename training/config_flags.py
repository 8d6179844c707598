"""Run configs declared once: a dataclass field carries its command-line flag.

A field whose metadata comes from :func:`cli` is a flag: :func:`add_arguments` builds
it from the field (name, type, default, choices of a ``Literal``) and the few words in
``cli(...)``; :func:`from_namespace` maps the parsed flags back onto the dataclass; and
:func:`command_line` spells an instance as the command line that makes it. Fields
without such metadata (a recorded command, say) have no flag. The same pattern as
transformers' ``HfArgumentParser`` (``field(metadata={"help": ...})``), in the lines
this project needs. Torch-free: ``distill --help`` builds the parsers from these fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

_KEY = "cli"  # the metadata entry that holds a field's flag settings


def cli(help: str | None = None, *, flag: str | None = None, invert: bool = False,
        metavar: str | tuple[str, ...] | None = None, choices: Sequence[Any] | None = None,
        always: bool = False, result: bool = False, before: Any = dataclasses.MISSING,
        parse: Callable[[Any], Any] | None = None,
        spell: Callable[[Any], list[str]] | None = None) -> dict[str, Any]:
    """Field metadata that makes the field a flag: ``field(default=..., metadata=cli(...))``.

    ``flag``: its spelling (default ``--`` + the name with dashes); ``invert``: a bool
    field that defaults to True, set False by the flag (``progress`` by ``--quiet``);
    ``choices``: when not the field's ``Literal``; ``always``: written by
    :func:`command_line` even at its default; ``result``: the setting changes results
    (:func:`result_fields`); ``before``: its value in records made before it existed
    (:func:`values_before`); ``parse`` / ``spell``: a repeatable flag's strings to the
    field's value and back (the flag then appends).
    """
    return {_KEY: {"help": help, "flag": flag, "invert": invert, "metavar": metavar,
                   "choices": choices, "always": always, "result": result, "before": before,
                   "parse": parse, "spell": spell}}


@dataclasses.dataclass(frozen=True)
class _Flag:
    """One field as a flag: its spelling and what its type says about its values."""

    field: dataclasses.Field[Any]
    opts: dict[str, Any]
    kind: type  # the value type (of each value, when several)
    optional: bool  # ``X | None``
    nargs: int | str | None  # a tuple field: "+" for tuple[X, ...], else its length
    choices: tuple[Any, ...] | None

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def spelling(self) -> str:
        return str(self.opts["flag"] or "--" + self.name.replace("_", "-"))

    @property
    def required(self) -> bool:
        return (self.field.default is dataclasses.MISSING
                and self.field.default_factory is dataclasses.MISSING)

    def default(self) -> Any:
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return None if self.required else self.field.default


def _flags(cls: type) -> Iterator[_Flag]:
    """The fields of ``cls`` that are flags, in field order."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _KEY not in f.metadata:
            continue
        kind, optional, nargs = hints[f.name], False, None
        if get_origin(kind) in (Union, types.UnionType):
            optional = type(None) in get_args(kind)
            (kind,) = (a for a in get_args(kind) if a is not type(None))
        if get_origin(kind) is tuple:
            args = get_args(kind)
            nargs = "+" if args[1:] == (Ellipsis,) else len(args)
            kind = args[0]
        choices = f.metadata[_KEY]["choices"]
        if get_origin(kind) is Literal:
            choices = choices or get_args(kind)
            kind = type(get_args(kind)[0])
        yield _Flag(f, f.metadata[_KEY], kind, optional, nargs,
                    None if choices is None else tuple(choices))


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Adds a flag for each field of ``cls`` declared with :func:`cli`, in field order."""
    for f in _flags(cls):
        kwargs: dict[str, Any] = {"dest": f.name, "help": f.opts["help"],
                                  "default": f.default()}
        if f.kind is bool and f.nargs is None:
            kwargs["action"] = (argparse.BooleanOptionalAction if f.optional
                                else "store_false" if f.opts["invert"] else "store_true")
        else:
            # The metavar argparse would derive from the flag (the dest is the field's name).
            metavar = f.opts["metavar"] or (None if f.choices else
                                            f.spelling.lstrip("-").replace("-", "_").upper())
            kwargs.update(type=f.kind, metavar=metavar, choices=f.choices, nargs=f.nargs,
                          required=f.required)
            if f.opts["spell"] is not None:  # each flag one string, parsed by from_namespace
                kwargs.update(action="append", type=str,
                              default=f.opts["spell"](f.default()))
        parser.add_argument(f.spelling, **kwargs)


def from_namespace(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """An instance of ``cls`` from the flags :func:`add_arguments` added (sequences become
    the fields' tuples), plus ``values`` for the fields without a flag."""
    for f in _flags(cls):
        value = getattr(args, f.name)
        if f.opts["parse"] is not None:
            value = f.opts["parse"](value)
        elif f.nargs is not None and value is not None:
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def command_line(config: Any, program: Sequence[str]) -> list[str]:
    """``program`` and the flags that make ``config``: the required ones, those marked
    ``always`` and every other one whose value is not its default."""
    cmd = list(program)
    for f in _flags(type(config)):
        value = getattr(config, f.name)
        if value is None or (value == f.default() and not (f.required or f.opts["always"])):
            continue
        if f.kind is bool and f.nargs is None:
            if value != f.default():  # a switch is only ever spelled to change its default
                cmd.append(f.spelling if value or f.opts["invert"]
                           else "--no-" + f.spelling[2:])
        elif f.opts["spell"] is not None:
            for item in f.opts["spell"](value):
                cmd += [f.spelling, item]
        elif f.nargs is not None:
            cmd += [f.spelling, *(str(v) for v in value)]
        else:
            cmd += [f.spelling, str(value)]
    return cmd


def result_fields(cls: type) -> tuple[str, ...]:
    """The fields marked ``result``: the settings that change results."""
    return tuple(f.name for f in _flags(cls) if f.opts["result"])


def values_before(cls: type) -> dict[str, Any]:
    """The value each field marked ``before`` had in records made before it existed."""
    return {f.name: f.opts["before"] for f in _flags(cls)
            if f.opts["before"] is not dataclasses.MISSING}
