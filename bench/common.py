"""Helpers shared by the benchmark's processes: one clock, sender loops and percentiles."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, or uvloop's loop (as uvicorn picks for the replicas) when BENCH_UVLOOP=1."""
    if os.environ.get("BENCH_UVLOOP") == "1":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def now() -> float:
    """CLOCK_MONOTONIC in seconds: one system-wide clock, so times compare across processes."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`; 0.0 if empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


async def run_senders(n: int, k: int, send: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    """Call `send(0)` .. `send(n - 1)` from `k` concurrent tasks, each in order, and time each call.

    Task j sends i = j, j + k, j + 2k, ... Returns the start and end times (`now()`), the elapsed
    seconds and the per-call latency p50 and p99 in microseconds.
    """
    latencies: list[float] = []

    async def sender(first: int) -> None:
        for i in range(first, n, k):
            t = now()
            await send(i)
            latencies.append(now() - t)

    start = now()
    await asyncio.gather(*(sender(j) for j in range(k)))
    end = now()
    return {
        "sent": n,
        "k": k,
        "t_start": start,
        "t_end": end,
        "elapsed": end - start,
        "lat_p50_us": percentile(latencies, 50) * 1e6,
        "lat_p99_us": percentile(latencies, 99) * 1e6,
    }


#: Sends in flight at most, per paced sender (as a web app's handlers would have): past it a sender
#: falls behind its rate instead of piling up tasks and connections.
IN_FLIGHT = 64


async def paced(rate: float, seconds: float, send: Callable[[int], Awaitable[Any]]) -> dict[str, Any]:
    """Call `send(0)`, `send(1)`, ... at `rate` per second for `seconds`, in ticks of 10 ms (never
    a sub-millisecond sleep): each tick starts the calls due by then, concurrently, at most IN_FLIGHT
    at a time. Returns the calls made, the seconds taken and the errors."""
    start = now()
    sent = errors = 0
    running: set[asyncio.Task[Any]] = set()
    room = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        nonlocal errors
        try:
            await send(i)
        except Exception:
            errors += 1
        finally:
            room.release()

    while (elapsed := now() - start) < seconds:
        while sent < int(rate * elapsed):
            await room.acquire()
            task = asyncio.create_task(one(sent))
            running.add(task)
            task.add_done_callback(running.discard)
            sent += 1
        await asyncio.sleep(0.01)
    await asyncio.gather(*running)
    return {"sent": sent, "seconds": now() - start, "errors": errors}
