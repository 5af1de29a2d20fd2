"""The blocking reader of the ipc framing, for tests: the server and the worker read frames with
:class:`service.ipc.framing.FrameReader` on their own loops; a test reads one message at a time."""

from __future__ import annotations

import os
from typing import Any

from service.ipc.framing import _LEN, decode_frame


def _read_exactly(fd: int, buf: memoryview) -> None:
    got = 0
    while got < buf.nbytes:
        n = os.readv(fd, [buf[got:]])
        if n == 0:
            raise EOFError
        got += n


def recv_msg(conn: Any) -> Any:
    """Receive one message sent by :func:`send_msg` (blocks; ``EOFError`` when the peer is gone).
    Inline buffers land in a fresh ``bytearray``, so arrays come back writable."""
    fd = conn.fileno()
    head = bytearray(_LEN.size)
    _read_exactly(fd, memoryview(head))
    (n,) = _LEN.unpack_from(head, 0)
    frame = bytearray(n)
    _read_exactly(fd, memoryview(frame))
    return decode_frame(frame)
