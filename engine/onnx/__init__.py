"""ONNX models as ``gradnet/1`` networks (API.md section 8).

::

    doc = engine.onnx.import_model(model_bytes, max_bytes=64 << 20)   # a gradnet/1 document
    net = engine.parse_network(doc)

Pure: the model is parsed, checked and shape-inferred by the ``onnx`` package and converted to
catalog ops; nothing in it is executed. Inputs are the graph inputs that are not initializers,
in graph order; parameters are the initializers under their ONNX names (floating ones
trainable, the others frozen), followed by frozen parameters for the constants the converted
nodes take as tensors (named ``<value>/const``); outputs are the graph outputs in order. Free
(symbolic) dimensions of the inputs stay free (``null``). Errors are the engine's:
:class:`InvalidOnnxError` (``invalid_onnx``, 400), :class:`UnsupportedOnnxOpError`
(``unsupported_onnx_op``, 422, naming the node, op type and opset),
:class:`OnnxExternalDataError` (``onnx_external_data``, 422),
:class:`UnsupportedOnnxModelError` (``unsupported_onnx_model``, 422) and
:class:`~engine.errors.TooLargeError` (``too_large``, 413).
"""

from __future__ import annotations

from typing import Any

from .converters import CONSTANT_ONLY_OPS, SUPPORTED_OPS
from .errors import InvalidOnnxError, OnnxExternalDataError, UnsupportedOnnxModelError, UnsupportedOnnxOpError
from .importer import MAX_OPSET, MIN_OPSET, convert


def import_model(model_bytes: bytes, *, max_bytes: int | None = None, name: str | None = None) -> dict[str, Any]:
    """The gradnet/1 document of an ONNX ``ModelProto`` (its serialized bytes).

    ``max_bytes`` bounds the model's size (over it: ``TooLargeError``); ``name`` overrides the
    document's name (the graph's name by default).
    """
    return convert(model_bytes, max_bytes=max_bytes, name=name)


__all__ = [
    "CONSTANT_ONLY_OPS", "InvalidOnnxError", "MAX_OPSET", "MIN_OPSET", "OnnxExternalDataError", "SUPPORTED_OPS",
    "UnsupportedOnnxModelError", "UnsupportedOnnxOpError", "import_model",
]
