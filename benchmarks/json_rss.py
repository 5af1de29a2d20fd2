"""Peak RSS of the server for large JSON bodies (issue 12, point 4).

Starts ``gradserve serve`` (one CPU worker, ``max_body_bytes`` 256 MiB), sends ``--concurrent``
valid JSON ``/grad`` bodies of about ``--mib`` MiB at once (one float32 input of ``data`` numbers,
network ``ReduceSum``), and prints the statuses and the serving process's peak RSS (``VmHWM``) as
JSON: the process that answers HTTP (in the in-process design, the supervisor's one child, with
its engine inside; in the process design, the server, not its workers).

    .venv/bin/python benchmarks/json_rss.py --mib 200 --concurrent 1
    .venv/bin/python benchmarks/json_rss.py --mib 200 --concurrent 4 --setting max_inflight_bytes=440401920
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.servers import start_server  # noqa: E402


def _vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=1)
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    settings = {"max_body_bytes": 256 * 2**20, "max_tensor_elements": 64 * 2**20, "timeout_ms": 600_000}
    settings.update(dict(s.split("=", 1) for s in args.setting))
    number = b"0.1234567,"  # 10 bytes a number
    n = args.mib * 2**20 // len(number)
    head = b'{"network": {"format": "gradnet/1", "inputs": [{"name": "x"}], "nodes": [{"name": "s", "op": "ReduceSum", ' \
           b'"inputs": ["x"]}], "outputs": ["s"]}, "inputs": [{"dtype": "float32", "shape": [%d], "data": [' % n
    body = head + number * (n - 1) + b"0.1234567]}]}"
    server = start_server(Path(tempfile.mkdtemp()), **settings)
    try:
        import httpx  # noqa: PLC0415

        serving = server.serving_pid()
        base = _vm(serving, "VmRSS")
        statuses: Counter = Counter()

        def one() -> None:
            r = httpx.post(server.url + "/grad", content=body, headers={"Content-Type": "application/json"},
                           timeout=600)
            statuses[r.status_code] += 1

        threads = [threading.Thread(target=one) for _ in range(args.concurrent)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = _vm(serving, "VmHWM")
        print(json.dumps({"body_mib": round(len(body) / 2**20, 1), "concurrent": args.concurrent,
                          "settings": {k: str(v) for k, v in settings.items()}, "statuses": dict(statuses),
                          "worker_mode": str(settings.get("worker_mode", "default")),
                          "rss_before_mib": round(base / 2**20), "peak_rss_mib": round(peak / 2**20),
                          "peak_over_body": round((peak - base) / len(body), 1)}, indent=2))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
