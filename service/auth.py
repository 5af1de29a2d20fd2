"""API keys: ``Authorization: Bearer <key>`` on every route but ``/health/*`` (and HTTP Basic
auth with the key as the password on the UM-Bridge routes).

With no key configured (``settings.keys()`` empty) auth is off and every caller shares the
namespace :data:`PUBLIC`. With keys, each key has its own namespace (a hash of the key, so the
registry never stores a key): networks registered with one key are visible only with that key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

PUBLIC = "public"


def namespace_of(key: str) -> str:
    """The registry namespace of an API key (a hash: the key itself is never stored)."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]


class Authenticator:
    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [(k.encode(), namespace_of(k)) for k in sorted(keys)]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def namespace(self, authorization: bytes | None, basic: bool = False) -> str | None:
        """The caller's namespace for an ``Authorization`` header value, or None (401).

        With ``basic`` (the UM-Bridge routes: their clients send no headers of their own, only a
        URL's ``user:password@``), ``Basic base64(user:key)`` is taken too, the key as the password.
        Every configured key is compared, in constant time, whatever matches first."""
        if not self._keys:
            return PUBLIC
        if not authorization:
            return None
        scheme, _, token = authorization.partition(b" ")
        if basic and scheme.lower() == b"basic":
            try:
                token = base64.b64decode(token.strip(), validate=True).partition(b":")[2]
            except ValueError:
                return None
        elif scheme.lower() != b"bearer":
            return None
        token = token.strip()
        found = None
        for key, namespace in self._keys:
            if hmac.compare_digest(key, token):
                found = namespace
        return found
