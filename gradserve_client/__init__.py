"""The Python client of gradserve (:mod:`.client`): a package of its own, not the server's."""

from .client import GradClient, GradResult, GradServeError, decode_tensor, parse_grad_response

__all__ = ["GradClient", "GradResult", "GradServeError", "decode_tensor", "parse_grad_response"]
