"""The one settings object: environment variables ``GRADSERVE_*``, overridden by CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRADSERVE_", extra="ignore")

    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, description="port to bind")
    workers: int | None = Field(None, ge=1, description="engine worker processes; unset: one per GPU, else 1")
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description="where the workers run")
    worker_mode: Literal["process", "inprocess"] = Field(
        "inprocess", description="process: the HTTP process hands jobs to one engine process per device; inprocess: "
        "one HTTP process per device runs its engine itself, under a supervisor that restarts one that dies "
        "(docs/benchmarks.md, issue 14)")
    registry_path: Path = Field(Path("var/registry.sqlite3"), description="SQLite file of registered networks")
    registry_url: str | None = Field(None, description="postgresql://user:pass@host:port/db of a registry shared "
                                     "by many servers (needs psycopg: the postgres extra); unset: the SQLite file")
    registry_start_empty: bool = Field(False, description="if the SQLite registry file is damaged, move it aside and "
                                       "start empty (default: refuse to start)")
    network_cache_size: int = Field(128, ge=1, description="parsed networks kept in memory (LRU)")
    compile_cache_size: int = Field(64, ge=1, description="compiled executables per worker (LRU)")
    compile_cache_dir: Path | None = Field(None, description="persistent XLA compile cache directory")
    executable_store: str = Field("off", description="compiled programs shared by workers, replicas and restarts, "
                                  "so that a new one does not compile what another did: off, registry (a table of "
                                  "the PostgreSQL registry; a directory beside the SQLite file), or a directory")
    warm_programs: int = Field(16, ge=0, description="with an executable store: the most recently used programs "
                               "a worker loads (and runs once) when it starts, before it takes requests")
    queue_size: int = Field(64, ge=1, description="requests queued, running or being read per worker before 503")
    timeout_ms: int = Field(30000, ge=1, description="default deadline of a /grad request")
    max_body_bytes: int = Field(256 * 1024 * 1024, ge=1, description="largest request body")
    max_tensor_elements: int = Field(64 * 1024 * 1024, ge=1, description="largest tensor (and intermediate), in elements")
    max_nodes: int = Field(10000, ge=1, description="most nodes in one network")
    api_keys: str | None = Field(None, description="comma-separated API keys; unset = no auth")
    api_keys_file: Path | None = Field(None, description="file with one API key per line")
    drain_timeout_s: float = Field(30.0, ge=0, description="how long SIGTERM waits for in-flight requests")
    log_level: str = Field("info", description="uvicorn log level")
    access_log: bool = Field(False, description="one log line per request (the uvicorn access log); off by default, "
                             "as in Triton: it costs about a tenth of the server CPU of a small request, and /metrics "
                             "counts every request by route and status")
    # Connection hygiene: what one slow or careless client may hold (docs/reliability.md).
    header_timeout_s: float = Field(10.0, gt=0, description="longest wait for the request line and headers, "
                                    "from the start of the connection or the previous answer (then 408, closed)")
    idle_timeout_s: float = Field(5.0, gt=0, description="how long a keep-alive connection may stay idle between "
                                  "requests before it is closed")
    body_timeout_s: float = Field(10.0, gt=0, description="time to read a request body at any rate; past it the "
                                  "body must keep up with --min-body-rate (else 408, closed)")
    min_body_rate: int = Field(256 * 1024, ge=1, description="bytes per second a body must average after "
                               "--body-timeout-s: a body of N bytes may take body_timeout_s + N / min_body_rate")
    max_connections: int = Field(2048, ge=1, description="open connections; one more is answered 503 and closed")
    max_header_bytes: int = Field(64 * 1024, ge=256, description="largest request line and headers together (431)")
    max_inflight_bytes: int = Field(1024 * 1024 * 1024, ge=1, description="request bodies in flight together, in "
                                    "bytes; one more that would pass it gets 503 (one request alone always fits)")
    compile_timeout_s: float = Field(60.0, gt=0, description="compile budget of one network program in a worker: "
                                     "past it (or past its estimate) the call fails with 422, remembered")
    worker_hang_s: float = Field(10.0, gt=0, description="a worker that has not answered a heartbeat for this "
                                 "long, with no request waiting on it within its deadline, is hung: /health/ready "
                                 "is 503 while every worker is hung, stopped, restarting or fully booked")
    # Dynamic batching (API.md section 9): jobs queued on a worker together that share a network,
    # transform and input shapes run as one vmapped program. Like Triton's dynamic batcher with
    # max_queue_delay 0, the default delay batches only what is already queued: a lone request
    # never waits, and under load the requests that piled up while the worker computed form the
    # next batch.
    max_batch_size: int = Field(64, ge=1, description="most requests computed as one batch by a worker "
                                "(1: no batching); batches are padded to 1, 2, 4, ... up to this size")
    batch_delay_us: int = Field(0, ge=0, description="how long, in microseconds, a batch that is not full "
                                "waits for more requests, once two or more are at hand (a lone request "
                                "never waits)")

    def keys(self) -> frozenset[str]:
        """The configured API keys (empty: auth is off)."""
        found: set[str] = set()
        if self.api_keys:
            found.update(k.strip() for k in self.api_keys.split(",") if k.strip())
        if self.api_keys_file:
            text = Path(self.api_keys_file).read_text()
            found.update(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
        return frozenset(found)
