"""The importer's errors: the engine's own classes, with the codes the ONNX route answers.

The engine knows no HTTP: the service maps ``invalid_onnx`` to 400 (the body is not an ONNX
model) and the others to 422 (a model the importer reads but cannot turn into gradnet/1); an
over-size model is the engine's :class:`~engine.errors.TooLargeError` (413). See
``service/http/errors.py``.
"""

from __future__ import annotations

from ..errors import GradnetError, NetworkError


class InvalidOnnxError(GradnetError):
    """The bytes are not a valid ONNX ModelProto (unparseable, or the ONNX checker refuses it)."""

    code = "invalid_onnx"


class UnsupportedOnnxOpError(NetworkError):
    """A node the importer cannot convert; ``node``, ``op_type``, ``domain`` and ``opset`` say which."""

    code = "unsupported_onnx_op"

    def __init__(self, message: str, path: str | None = None, *, node: str = "", op_type: str = "",
                 domain: str = "", opset: int | None = None) -> None:
        super().__init__(message, path)
        self.node, self.op_type, self.domain, self.opset = node, op_type, domain, opset


class OnnxExternalDataError(NetworkError):
    """A tensor of the model keeps its bytes in an external file: the importer reads no files."""

    code = "onnx_external_data"


class UnsupportedOnnxModelError(NetworkError):
    """A valid model outside what gradnet/1 can hold (a sequence input, a sparse initializer, a
    Shape of a dynamic dimension that the graph needs as a constant, ...)."""

    code = "unsupported_onnx_model"
