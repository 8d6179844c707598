"""onnxruntime sessions for ONNX teachers, and what a model file says about itself.

A session is always made from the model's bytes (the checkpoint holds them; see
:mod:`distill.teachers.onnx_family`), never from a path, and can read no external data
file; it runs on the CPU or, when the worker
has a GPU and onnxruntime-gpu is installed, the CUDA provider. It runs with as many
threads as torch is given (``DISTILL_TORCH_THREADS`` in the worker), so one knob bounds
a worker's CPU use whatever its teacher.

:class:`Signature` reads the input and outputs (names, shapes with ``None`` for a
dynamic dimension, element types) and the metadata Ultralytics' exporter writes
(``names``, ``kpt_shape``, ``imgsz``, ``stride``, ``task``, ``batch``; each value is
``str()`` of a Python literal, read back with :func:`ast.literal_eval`, never eval).
"""

from __future__ import annotations

import ast
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from distill.errors import CardError, ConfigError

Shape = tuple[int | None, ...]


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # the engine extra brings it
        raise ConfigError("ONNX teachers need onnxruntime (pip install 'distill[engine]', or "
                          "onnxruntime-gpu on a GPU machine)") from exc
    return onnxruntime


def open_session(model: bytes, *, cuda: bool = False, threads: int = 1) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``model``; :class:`CardError` if it is not
    a model onnxruntime can run."""
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the graph optimiser's notes are noise here
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if cuda and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    # A model loaded from bytes may name external data files, which onnxruntime reads
    # relative to the working directory: point it at an empty one, so that a model can
    # never read a file of the machine into its weights (ONNX teachers are one file).
    with tempfile.TemporaryDirectory(prefix="distill-onnx-") as empty:
        options.add_session_config_entry(
            "session.model_external_initializers_file_folder_path", empty)
        try:
            return ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            text = str(exc).strip()
            if "external data" in text.lower():
                raise CardError("the model refers to external data files; import a "
                                "self-contained ONNX file") from exc
            first = text.splitlines()[0] if text else type(exc).__name__
            raise CardError(f"onnxruntime cannot load the model: {first}") from exc


@dataclass(frozen=True)
class Signature:
    """A model's input, outputs and metadata."""

    input_name: str
    input_shape: Shape
    input_type: str
    outputs: tuple[tuple[str, Shape], ...]
    metadata: dict[str, Any]

    @classmethod
    def of(cls, session: Any) -> Signature:
        """Reads a session's signature; :class:`CardError` unless it has exactly one input."""
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise CardError(f"the model has {len(inputs)} inputs {names}; an exported detector "
                            "takes one image batch")
        meta = session.get_modelmeta().custom_metadata_map
        return cls(inputs[0].name, _shape(inputs[0].shape), str(inputs[0].type),
                   tuple((o.name, _shape(o.shape)) for o in session.get_outputs()),
                   {str(k): _literal(v) for k, v in meta.items()})

    def describe_outputs(self) -> str:
        """``output0 [B, 84, N]`` style, for error messages."""
        return ", ".join(f"{name} {format_shape(shape)}" for name, shape in self.outputs)


def _shape(dims: Any) -> Shape:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in dims)


def format_shape(shape: Shape) -> str:
    """``[1, 84, None]`` as ``[1, 84, ?]``."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _literal(value: str) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


def input_dtype(signature: Signature) -> type:
    """The numpy type the input takes (half-precision exports take float16)."""
    if signature.input_type == "tensor(float)":
        return np.float32
    if signature.input_type == "tensor(float16)":
        return np.float16
    raise CardError(f"the model's input {signature.input_name!r} is {signature.input_type}; "
                    "an image input is float (or float16)")
