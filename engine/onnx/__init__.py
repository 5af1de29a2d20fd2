"""ONNX models as ``gradnet/1`` networks (API.md section 8).

::

    doc = engine.onnx.import_model(model_bytes, max_bytes=64 << 20)   # a gradnet/1 document
    net = engine.parse_network(doc)

Pure: the model is parsed, checked and shape-inferred by the ``onnx`` package and converted to
catalog ops; nothing in it is executed. Inputs are the graph inputs that are not initializers,
in graph order; parameters are the initializers under their ONNX names (floating ones
trainable, the others frozen), followed by frozen parameters for the constants the converted
nodes take as tensors (named ``<value>/const``); outputs are the graph outputs in order. Free
(symbolic) dimensions of the inputs stay free (``null``): the shapes a graph computes from them
(``Shape``, and the integer arithmetic on it) are carried symbolically, so a ``Reshape`` with one
free entry gets ``-1`` and an ``Expand`` to the input's own free dimension keeps it; a graph that
needs two free sizes in one attr, or a free size as a tensor, is refused
(``unsupported_onnx_op``) with the reason. Call ``engine.configure_jax()`` first (as for an Engine): shapes are evaluated by JAX.
Errors are the engine's (the service maps their codes to statuses):
:class:`InvalidOnnxError` (``invalid_onnx``, 400), :class:`UnsupportedOnnxOpError`
(``unsupported_onnx_op``, 422, naming the node, op type and opset),
:class:`OnnxExternalDataError` (``onnx_external_data``, 422),
:class:`UnsupportedOnnxModelError` (``unsupported_onnx_model``, 422) and
:class:`~engine.errors.TooLargeError` (``too_large``, 413).
"""

from __future__ import annotations

from typing import Any

from .converters import CONSTANT_ONLY_OPS, SUPPORTED_OPS
from .errors import (
    InvalidOnnxError,
    OnnxExternalDataError,
    UnsupportedOnnxModelError,
    UnsupportedOnnxOpError,
)
from .importer import DEFAULT_MAX_ELEMENTS, MAX_OPSET, MIN_OPSET, convert


def import_model(model_bytes: bytes, *, max_bytes: int | None = None, max_nodes: int | None = None,
                 max_elements: int | None = None, name: str | None = None) -> dict[str, Any]:
    """The gradnet/1 document of an ONNX ``ModelProto`` (its serialized bytes).

    Limits, each a ``TooLargeError`` (413) when passed: ``max_bytes``, the model's size;
    ``max_nodes``, the converted network's nodes (an LSTM is unrolled over its sequence);
    ``max_elements``, the elements of one constant the import builds (ConstantOfShape, folded
    shapes, masks; 2**24 by default). ``name`` overrides the document's name (the graph's).
    """
    return convert(model_bytes, max_bytes=max_bytes, max_nodes=max_nodes, max_elements=max_elements, name=name)


__all__ = [
    "CONSTANT_ONLY_OPS", "DEFAULT_MAX_ELEMENTS", "InvalidOnnxError", "MAX_OPSET", "MIN_OPSET", "OnnxExternalDataError", "SUPPORTED_OPS",
    "UnsupportedOnnxModelError", "UnsupportedOnnxOpError", "import_model",
]
