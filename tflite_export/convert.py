"""Conversion of tf.Modules to TFLite flatbuffers, and what ops the result needs.

Two recipes:
- `convert_trainable`: builtins plus Select TF ops (the Flex delegate) with resource variables,
  as TFLite's on-device training guide prescribes. Which Select TF ops the model really uses
  is read back from the flatbuffer (custom op codes named `Flex<TfOp>`), not guessed.
- `convert_builtins`: builtins only (the suggestion-strip model), optionally with dynamic-range
  or full-integer int8 quantization; fails if anything outside the builtin set is needed.
"""

from __future__ import annotations

import collections
import contextlib
import os
import tempfile
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils

FLEX_PREFIX = "Flex"


class Converted(NamedTuple):
    """A converted model: the flatbuffer bytes and the Select TF ops it needs (TF op names)."""

    content: bytes
    select_tf_ops: list[str]


def custom_ops(content: bytes) -> dict[str, int]:
    """Custom op codes used by a TFLite flatbuffer, with how many operators use each."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    counts: collections.Counter[str] = collections.Counter()
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            if code.customCode:
                name = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
                counts[name] += 1
    return dict(sorted(counts.items()))


def select_tf_ops(content: bytes) -> list[str]:
    """Names of the TF ops a flatbuffer runs through the Flex delegate (e.g. ["Restore", "Save"])."""
    return sorted({name[len(FLEX_PREFIX):] for name in custom_ops(content) if name.startswith(FLEX_PREFIX)})


@contextlib.contextmanager
def _saved_model(module: tf.Module, signatures: dict) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="fedkeys_savedmodel_") as tmp:
        path = os.path.join(tmp, "model")
        tf.saved_model.save(module, path, signatures=signatures)
        yield path


def convert_trainable(module: tf.Module, signatures: dict) -> Converted:
    """Convert a module with training signatures: builtins + Select TF ops, resource variables.

    Args:
        module: the tf.Module owning the variables.
        signatures: {signature name: concrete function}.
    """
    with _saved_model(module, signatures) as path:
        converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=list(signatures))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                               tf.lite.OpsSet.SELECT_TF_OPS]
        converter.experimental_enable_resource_variables = True
        content = converter.convert()
    return Converted(content, select_tf_ops(content))


def convert_builtins(module: tf.Module, signatures: dict, quantize: str = "none",
                     representative: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None,
                     ) -> Converted:
    """Convert with builtin ops only (no Flex), optionally quantized to int8.

    Args:
        module: the tf.Module.
        signatures: {signature name: concrete function}.
        quantize: "none" (float32), "dynamic" (int8 weights, float activations) or "int8"
            (full-integer weights and activations from a representative set; inputs and
            outputs stay int32/float32 so the phone's calling code does not change).
        representative: for "int8", yields {input name: array} per calibration sample.

    Raises:
        ValueError: for an unknown `quantize`, or "int8" without a representative set, or if
            the result still holds custom (non-builtin) ops.
    """
    if quantize not in ("none", "dynamic", "int8"):
        raise ValueError(f"quantize: expected 'none', 'dynamic' or 'int8', got {quantize!r}")
    if quantize == "int8" and representative is None:
        raise ValueError("quantize='int8' needs a representative dataset")
    with _saved_model(module, signatures) as path:
        converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=list(signatures))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "int8":
            key = list(signatures)[0]

            def gen() -> Iterator[dict[str, np.ndarray]]:
                for sample in representative():  # type: ignore[misc]
                    yield key, sample

            converter.representative_dataset = gen
            # Full-integer ops inside, builtin fallback for ops without an int8 kernel.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                                   tf.lite.OpsSet.TFLITE_BUILTINS]
        content = converter.convert()
    leftover = custom_ops(content)
    if leftover:
        raise ValueError(f"expected builtin ops only, but the model uses custom ops {leftover}")
    return Converted(content, [])


def signature_specs(content: bytes, names: Sequence[str] | None = None) -> dict[str, dict]:
    """Input and output names, shapes and dtypes of each signature, read from the flatbuffer.

    Returns:
        {signature: {"inputs": {name: {"shape": [...], "dtype": str}}, "outputs": {...}}}
    """
    interpreter = tf.lite.Interpreter(model_content=content)
    out: dict[str, dict] = {}
    for sig in names or sorted(interpreter.get_signature_list()):
        runner = interpreter.get_signature_runner(sig)
        out[sig] = {
            side: {name: {"shape": [int(d) for d in det["shape"]], "dtype": np.dtype(det["dtype"]).name}
                   for name, det in sorted(details.items())}
            for side, details in (("inputs", runner.get_input_details()),
                                  ("outputs", runner.get_output_details()))
        }
    return out
