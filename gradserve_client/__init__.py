"""The Python client of gradserve (:mod:`.client`) and a graph builder (:mod:`.builder`): a
package of its own, not the server's."""

from .builder import Graph, Value
from .client import GradClient, GradResult, GradServeError, decode_tensor, parse_grad_response

__all__ = ["GradClient", "Graph", "Value", "GradResult", "GradServeError", "decode_tensor", "parse_grad_response"]
