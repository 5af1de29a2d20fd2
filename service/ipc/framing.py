"""The framing of messages between the server and a worker, over a socket pair.

Both ends are gradserve's own processes (nothing an HTTP client sent is ever unpickled).
A message is any picklable value (the messages themselves are :mod:`service.ipc.messages`'s),
pickled with protocol 5 and out-of-band buffers, one frame each (a job or a result as its wire
tuple, :func:`service.ipc.messages.to_wire`): NumPy arrays cross as whole
buffers, the large ones through a shared-memory arena of the receiver
(:mod:`service.ipc.arenas`) instead of the socket.

One message is one frame, written with one writev and read back with as few reads as there
are: ``<Q length>`` then the head ``<I buffers><Q pickle length><Q region start><Q region
length>``, one ``<q offset><Q size>`` per out-of-band buffer, the pickle, and the inline
buffers. A buffer of SHARED_MIN_BYTES or more crosses through the receiver's shared-memory
arena when it has room (offset >= 0: from the start of the message's region), so a large
tensor is copied once into shared memory and never pushed through the socket; the rest travel
inline. Small messages cost one system call on each side, and one wake-up of the reader.

This module imports nothing heavy (NumPy, the arenas and the messages only): the worker imports it before
its environment is set up.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from .arenas import Arena
from .messages import from_wire, to_wire

# One message is one frame, written with one writev and read back with as few reads as there
# are: ``<Q length>`` then the head ``<I buffers><Q pickle length><Q region start><Q region
# length>``, one ``<q offset><Q size>`` per out-of-band buffer, the pickle, and the inline
# buffers. A buffer of SHARED_MIN_BYTES or more crosses through the receiver's shared-memory
# arena when it has room (offset >= 0: from the start of the message's region), so a large
# tensor is copied once into shared memory and never pushed through the socket; the rest travel
# inline. Small messages cost one system call on each side, and one wake-up of the reader.

_LEN = struct.Struct("<Q")
_HEAD = struct.Struct("<IQQQ")
_BUF = struct.Struct("<qQ")
#: a buffer at least this large goes through the shared arena (when there is one, with room)
SHARED_MIN_BYTES = 32 * 1024
#: a frame at least this large is read straight into its own buffer
_BIG_FRAME = 256 * 1024
_READ_CHUNK = 256 * 1024
_SMALL_INLINE = 4096  # inline buffers up to this size are joined into the frame's first part
_IOV_MAX = 512
_ALIGN = 64  # buffers start at multiples of this in an arena region


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


Alloc = Callable[[int], "int | None"]


def encode_msg(msg: Any, alloc: Alloc | None = None, arena: Arena | None = None) -> tuple[list[Any], int | None]:
    """The parts of ``msg``'s frame (for one writev), and the start of the arena region its large
    buffers were copied to (None: none, everything is inline)."""
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(to_wire(msg), protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    start = None
    total = 0
    if alloc is not None and arena is not None:
        total = sum(_aligned(r.nbytes) for r in raws if r.nbytes >= SHARED_MIN_BYTES)
        if total:
            start = alloc(total)
    descr = []
    inline: list[Any] = []
    inline_size = 0
    offset = 0
    base = start % arena.size if start is not None else 0  # type: ignore[union-attr]
    for raw in raws:
        n = raw.nbytes
        if start is not None and n >= SHARED_MIN_BYTES:
            arena.view[base + offset:base + offset + n] = raw  # type: ignore[union-attr]
            descr.append(_BUF.pack(offset, n))
            offset += _aligned(n)
        else:
            descr.append(_BUF.pack(-1, n))
            inline.append(raw)
            inline_size += n
    head = _HEAD.pack(len(raws), len(payload), start or 0, total if start is not None else 0) + b"".join(descr)
    size = len(head) + len(payload) + inline_size
    if inline_size <= _SMALL_INLINE:
        return [b"".join([_LEN.pack(size), head, payload, *inline])], start
    return [_LEN.pack(size) + head + payload, *inline], start


def decode_frame(frame: bytearray, region: Callable[[int, int], Any] | None = None) -> Any:
    """The message in ``frame`` (without its length); ``region(start, length)`` gives the array of
    the arena region that its shared buffers are in."""
    count, payload_len, start, length = _HEAD.unpack_from(frame, 0)
    view = memoryview(frame)
    pos = _HEAD.size + count * _BUF.size
    payload = view[pos:pos + payload_len]
    pos += payload_len
    shared = region(start, length) if length and region is not None else None
    buffers: list[Any] = []
    for i in range(count):
        offset, n = _BUF.unpack_from(frame, _HEAD.size + i * _BUF.size)
        if offset < 0:
            buffers.append(view[pos:pos + n])
            pos += n
        else:
            if shared is None:
                raise ValueError("a message refers to a shared arena that this end does not have")
            buffers.append(shared[offset:offset + n])
    return from_wire(pickle.loads(payload, buffers=buffers))


def write_parts(fd: int, parts: list[Any]) -> list[Any]:
    """Write ``parts`` with as few writev calls as it takes; on a non-blocking descriptor, stop
    when it would block and return what is left (``[]``: all written)."""
    views = [p if isinstance(p, memoryview) else memoryview(p) for p in parts]
    while views:
        try:
            n = os.writev(fd, views[:_IOV_MAX])
        except BlockingIOError:
            return views
        except InterruptedError:
            continue
        while n and views:
            k = views[0].nbytes
            if n >= k:
                n -= k
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0
        while views and views[0].nbytes == 0:
            views.pop(0)
    return views


class FrameReader:
    """Frames from a stream descriptor, read in chunks (several small frames per read) or, for a
    large frame, straight into its own buffer. Every frame is a fresh ``bytearray``, so arrays
    built on it are writable and outlive the reader's buffer."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = bytearray()
        self.big: bytearray | None = None
        self.got = 0
        self.ready: deque[bytearray] = deque()

    def feed(self) -> None:
        """Read once (``EOFError`` at end of stream; ``BlockingIOError`` if nothing is there)."""
        if self.big is not None:
            n = os.readv(self.fd, [memoryview(self.big)[self.got:]])
            if n == 0:
                raise EOFError
            self.got += n
            if self.got == len(self.big):
                self.ready.append(self.big)
                self.big = None
            return
        data = os.read(self.fd, _READ_CHUNK)
        if not data:
            raise EOFError
        pending = self.pending
        pending += data
        while len(pending) >= _LEN.size:
            (n,) = _LEN.unpack_from(pending, 0)
            end = _LEN.size + n
            if len(pending) >= end:
                self.ready.append(pending[_LEN.size:end])
                del pending[:end]
            else:
                if n >= _BIG_FRAME:
                    big = bytearray(n)
                    have = len(pending) - _LEN.size
                    big[:have] = pending[_LEN.size:]
                    pending.clear()
                    self.big, self.got = big, have
                break


def send_msg(conn: Any, msg: Any) -> None:
    """Send ``msg`` over a blocking connection (blocks until it is all written)."""
    write_parts(conn.fileno(), encode_msg(msg)[0])
