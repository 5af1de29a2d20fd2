"""The engine's exception hierarchy.

Every error the engine raises for bad input is a :class:`GradnetError` with a machine-readable
``code``, a human ``message`` that says what was expected, and a ``path`` into the request
(``nodes[3].attrs.axis``) so a client can find the offending field. The engine knows nothing
about HTTP or the service: the service maps these classes to HTTP statuses
(:mod:`service.http.errors`).

:class:`CodedError` is the root of gradserve's one error hierarchy: the engine's errors
(:class:`GradnetError`, the request is invalid) and the service's (``service.errors``, what only
a server can go wrong with) are its two branches.
"""

from __future__ import annotations


class CodedError(Exception):
    """An error an answer can carry: ``code`` (machine-readable), ``message``, ``path``."""

    code = "internal_error"

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "path": self.path}

    def __str__(self) -> str:
        return f"{self.message} (at {self.path})" if self.path else self.message


class GradnetError(CodedError):
    """The engine's errors: the request or network is invalid."""

    code = "invalid_request"


class NetworkError(GradnetError):
    """The network definition is malformed (missing field, wrong type)."""

    code = "invalid_network"


class UnknownOpError(NetworkError):
    code = "unknown_op"


class AttrError(NetworkError):
    code = "bad_attr"


class UndefinedNameError(NetworkError):
    code = "undefined_name"


class DuplicateNameError(NetworkError):
    code = "duplicate_name"


class CycleError(NetworkError):
    code = "cycle"


class TensorError(GradnetError):
    """A tensor object is malformed: bad dtype, data that does not match its shape, bad base64."""

    code = "invalid_tensor"


class TooLargeError(GradnetError):
    """A tensor, an intermediate value or a network is over a configured limit."""

    code = "too_large"


class ShapeError(GradnetError):
    code = "shape_mismatch"


class DTypeError(GradnetError):
    code = "dtype_mismatch"


class SensError(GradnetError):
    code = "bad_sens"


class CompileError(GradnetError):
    """The network's program could not be compiled within the worker's compile budget, or the
    compiler failed on it (remembered: the same call fails fast)."""

    code = "compile_failed"


class ArgumentError(GradnetError):
    """A request argument is wrong: input count, unknown weight or parameter name."""

    code = "bad_argument"
