"""How long this machine takes to wake a sleeping process: a byte sent to a child that waits for it
and sent back, after an idle gap each time (as a runner at 100 jobs/s sleeps between jobs).

A job crosses a dozen such wake-ups between its insert and its completion (inserter, backends,
listener, producer, completer), so on a VM whose wake-up time moves by a factor of three within
minutes, latency figures are read next to this probe taken in the same minutes.
"""

from __future__ import annotations

import os
import socket
import statistics
import time


def percentiles_us(samples: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max of round trips given in seconds, in microseconds."""
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_us": q[49] * 1e6, "p95_us": q[94] * 1e6, "p99_us": q[98] * 1e6, "max_us": max(samples) * 1e6}


def probe(samples: int = 500, gap: float = 0.01) -> dict[str, float]:
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the child: echo until the parent closes its end
        a.close()
        while data := b.recv(1):
            b.send(data)
        os._exit(0)
    b.close()
    rtts = []
    try:
        for _ in range(samples):
            time.sleep(gap)
            t = time.perf_counter()
            a.send(b"x")
            a.recv(1)
            rtts.append(time.perf_counter() - t)
    finally:
        a.close()
        os.waitpid(pid, 0)
    return percentiles_us(rtts)
