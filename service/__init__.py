"""gradserve's HTTP service: FastAPI over a pool of engine worker processes.

The folders are the layers, outermost first (docs/architecture.md draws them):

- :mod:`service.http`: the app factory, the guard in front of it, the routes, request bodies
  in and responses out, errors as HTTP answers, the OpenAPI document;
- :mod:`service.grad`: ``POST /grad``: the parsed call, the validator, the handler;
- :mod:`service.pool`: the worker pool: lifecycle, scheduling and admission, process slots,
  the GPU probe;
- :mod:`service.ipc`: the process boundary: every message, the framing, the shared memory;
- :mod:`service.worker`: the worker process itself.

Beside them, what more than one layer reads: :mod:`.settings`, :mod:`.errors` (the service's
own errors, no HTTP), :mod:`.registry`, :mod:`.auth`, :mod:`.metrics`, :mod:`.models` (the
OpenAPI schemas), and the ``gradserve`` command (:mod:`.cli`, :mod:`.openapi_export`).
"""
