"""A capacity plan from measured costs: replicas, Redis shards and memory for given traffic.

    .venv/bin/python -m bench.capacity --sessions 100000 1000000 --rate 0.1 2 \\
        --streaming-share 0.05 --tokens-per-second 20
    .venv/bin/python -m bench.capacity --calibration bench/results/my-costs.json ...

The costs come from a calibration file (default: bench/calibration.json, the figures measured on
this project's machine with bench/redis_cost.py, bench/redis_memory.py, bench/scale.py and
bench/delivery.py; each value says where it came from). The formulas are explained in
docs/capacity.md. For every combination of sessions and rate it prints what each limit asks for and
which one binds first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "bench" / "calibration.json"
GIB = 1024**3


def value(cal: dict[str, Any], name: str) -> float:
    entry = cal["costs"][name]
    return float(entry["value"] if isinstance(entry, dict) else entry)


def plan(cal: dict[str, Any], sessions: float, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """What `sessions` concurrent sessions, each sending `rate` durable messages/s, need."""

    def v(name: str) -> float:
        return value(cal, name)

    # traffic of one session
    tokens = args.streaming_share * args.tokens_per_second  # unlogged stream_token/s
    overhead = v("envelope_overhead_bytes")
    size_factor = (args.message_bytes + overhead) / (v("calibrated_message_bytes") + overhead)
    # -- one replica (one uvicorn process = one core) -------------------------------------------
    cpu_per_session = (
        v("replica_idle_us_per_session_second")
        + (rate + tokens) * v("replica_deliver_us_per_message") * size_factor
    )
    per_replica = {
        "replica CPU": args.replica_cpu_target * 1e6 / cpu_per_session,
        "replica memory": (args.replica_memory_gib * GIB - v("replica_base_rss_bytes"))
        / v("replica_rss_bytes_per_session"),
        "file descriptors": args.replica_fd_limit - args.replica_fd_reserve,
    }
    # -- one Redis shard (one core) --------------------------------------------------------------
    redis_us_per_session = rate * v("redis_us_per_durable_send") * size_factor + tokens * v(
        "redis_us_per_token_send"
    )
    entry = args.message_bytes + overhead + v("log_entry_overhead_bytes")
    kept = min(args.log_length, rate * args.log_seconds, args.log_bytes / entry)
    log_bytes = (v("log_fixed_bytes") if kept >= 1 else 0.0) + kept * entry
    bytes_per_session = (1 + args.disconnected_share) * (v("redis_bytes_per_session") + log_bytes)
    per_shard = {
        "Redis CPU per shard": args.redis_cpu_target * 1e6 / max(redis_us_per_session, 1e-9),
        "Redis memory": args.redis_memory_gib * GIB * args.redis_memory_target / bytes_per_session,
    }
    replicas = max(1, math.ceil(sessions / min(per_replica.values())))
    # heartbeats and sweeps: a few commands per replica per heartbeat, whatever the sessions
    redis_cpu_us = sessions * redis_us_per_session + replicas * v("redis_us_per_replica_second")
    shards_cpu = redis_cpu_us / (args.redis_cpu_target * 1e6)
    shards_mem = sessions * bytes_per_session / (args.redis_memory_gib * GIB * args.redis_memory_target)
    every = {**per_replica, **per_shard}
    return {
        "sessions": sessions,
        "rate": rate,
        "durable_per_s": sessions * rate,
        "tokens_per_s": sessions * tokens,
        "sessions_per_replica": per_replica,
        "replicas": replicas,
        "replica_binding": min(per_replica, key=lambda k: per_replica[k]),
        "sender_cores": sessions * (rate + tokens) * v("sender_us_per_message") * size_factor / 1e6,
        "sessions_per_shard": per_shard,
        "redis_shards": max(1, math.ceil(max(shards_cpu, shards_mem))),
        "shard_binding": "Redis CPU per shard" if shards_cpu >= shards_mem else "Redis memory",
        "redis_cpu_cores": redis_cpu_us / 1e6,
        "redis_memory_gib": sessions * bytes_per_session / GIB,
        "log_entries_kept": kept,
        "replica_memory_gib": sessions * v("replica_rss_bytes_per_session") / GIB,
        # growing from one replica and one shard, the limit met first
        "binds_first": min(every, key=lambda k: every[k]),
        "binds_first_at": min(every.values()),
    }


def count(sessions: float) -> str:
    return "unbounded" if sessions > 1e12 else f"{sessions:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--calibration", type=Path, default=DEFAULT, help="costs (bench/calibration.json)")
    parser.add_argument("--sessions", type=float, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rate", type=float, nargs="+", default=[0.1, 2.0], help="durable msg/s per session")
    parser.add_argument("--streaming-share", type=float, default=0.05, help="share of sessions streaming")
    parser.add_argument("--tokens-per-second", type=float, default=20.0, help="tokens/s of a stream")
    parser.add_argument("--message-bytes", type=float, default=100.0, help="text bytes per message (100)")
    parser.add_argument("--log-length", type=float, default=1000, help="SWITCHBOARD_SESSION_LOG_LENGTH")
    parser.add_argument("--log-seconds", type=float, default=900, help="SWITCHBOARD_SESSION_LOG_SECONDS")
    parser.add_argument("--log-bytes", type=float, default=4 * 1024 * 1024, help="..._LOG_BYTES")
    parser.add_argument(
        "--disconnected-share", type=float, default=0.1, help="sessions in their grace period, over live"
    )
    parser.add_argument("--replica-cpu-target", type=float, default=0.6, help="busy share of a core")
    parser.add_argument("--replica-memory-gib", type=float, default=4.0, help="memory per replica")
    parser.add_argument("--replica-fd-limit", type=float, default=65536, help="RLIMIT_NOFILE per replica")
    parser.add_argument("--replica-fd-reserve", type=float, default=1024, help="fds not for sockets")
    parser.add_argument("--redis-cpu-target", type=float, default=0.5, help="busy share of a shard's core")
    parser.add_argument("--redis-memory-gib", type=float, default=32.0, help="memory per shard")
    parser.add_argument("--redis-memory-target", type=float, default=0.7, help="usable share of it")
    parser.add_argument("--json", action="store_true", help="print the plans as JSON")
    args = parser.parse_args()
    cal = json.loads(args.calibration.read_text())
    plans = [plan(cal, s, r, args) for s, r in itertools.product(args.sessions, args.rate)]
    if args.json:
        print(json.dumps(plans, indent=1))
        return
    print(f"calibration: {args.calibration} ({cal.get('measured', '')})")
    print(
        f"streaming: {args.streaming_share:.0%} of sessions at {args.tokens_per_second:g} tokens/s; "
        f"messages of {args.message_bytes:g} bytes; log kept: {args.log_length:g} entries, "
        f"{args.log_seconds:g} s, {args.log_bytes / 1024**2:g} MiB"
    )
    for p in plans:
        print()
        print(
            f"== {p['sessions']:,.0f} sessions x {p['rate']:g} msg/s: "
            f"{p['durable_per_s']:,.0f} durable msg/s + {p['tokens_per_s']:,.0f} tokens/s"
        )
        by = ", ".join(f"{k} {count(v)}" for k, v in p["sessions_per_replica"].items())
        print(
            f"  replicas:     {p['replicas']:>6}  (sessions per replica: {by}; binds: {p['replica_binding']})"
        )
        print(f"  sender cores:  {p['sender_cores']:>8.1f}  (workers/hooks calling send, CPU only)")
        by = ", ".join(f"{k} {count(v)}" for k, v in p["sessions_per_shard"].items())
        print(
            f"  Redis shards: {p['redis_shards']:>6}  (sessions per shard: {by}; binds: {p['shard_binding']})"
        )
        print(
            f"  Redis:         {p['redis_cpu_cores']:8.2f} cores busy, {p['redis_memory_gib']:8.1f} GiB "
            f"({p['log_entries_kept']:.0f} log entries kept per session)"
        )
        print(f"  replica RSS:   {p['replica_memory_gib']:8.1f} GiB in all")
        print(
            f"  binds first:   {p['binds_first']} (on one replica and one shard, at "
            f"{p['binds_first_at']:,.0f} sessions)"
        )


if __name__ == "__main__":
    main()
