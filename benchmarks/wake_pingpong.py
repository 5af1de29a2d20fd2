"""What one cross-process round trip costs on this machine: a uvloop event loop and a blocking
child process bounce 200 bytes over a socket pair, as the server and a worker do.

Run it as it is (the scheduler places the two processes), and under ``taskset -c 1`` (both on one
CPU: no cross-CPU wake-up): ``.venv/bin/python benchmarks/wake_pingpong.py [--rounds 20000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time

import uvloop


def _echo(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    while data := sock.recv(4096):
        sock.sendall(data)


async def _bounce(sock: socket.socket, rounds: int) -> list[float]:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    waiter: asyncio.Future[bytes] | None = None

    def readable() -> None:
        assert waiter is not None
        waiter.set_result(sock.recv(4096))

    loop.add_reader(sock.fileno(), readable)
    times = []
    for _ in range(rounds):
        waiter = loop.create_future()
        t0 = time.perf_counter()
        sock.send(b"x" * 200)
        await waiter
        times.append(time.perf_counter() - t0)
    loop.remove_reader(sock.fileno())
    return sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20000)
    args = parser.parse_args()
    mine, theirs = socket.socketpair()
    child = multiprocessing.get_context("fork").Process(target=_echo, args=(theirs.fileno(),), daemon=True)
    child.start()
    times = uvloop.run(_bounce(mine, args.rounds))
    child.kill()
    print(f"round trip p50 {times[len(times) // 2] * 1e6:.1f} µs, p90 {times[int(len(times) * 0.9)] * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
