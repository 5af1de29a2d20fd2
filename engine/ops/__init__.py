"""The op catalog. Importing this package registers every op module's entries in :data:`OPS`."""

from . import elementwise, nn, reductions, shapes  # noqa: F401  (registration side effects)
from .catalog import OPS, Attr, OpDef, catalog, lookup, op

__all__ = ["OPS", "Attr", "OpDef", "catalog", "lookup", "op"]
