"""The process boundary between the server and its engine workers.

- :mod:`.messages`: every message (its constructor and reader), jobs and results;
- :mod:`.framing`: one frame per message over a socket pair (pickle protocol 5, out-of-band
  buffers);
- :mod:`.arenas`: the shared-memory arenas that large buffers cross through.

Nothing here knows HTTP, the pool's scheduling or the engine.
"""
