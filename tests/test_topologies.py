"""The bus on three Redis topologies: one node, Sentinel (a primary, a replica, three Sentinels) and
Redis Cluster (three primaries with a replica each), all started by the fixtures on loopback ports.

The cross-process behaviours run on each topology through the one `topology` fixture parameter; the
failover and slot-migration tests check that nothing a sender was given a receipt for is lost: it
reaches the client, or the client is told its log was reset (`log_reset`), and nothing reaches it twice.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis

from bus import Bus, BusUnavailable, Envelope, Keys, Receipt, Settings, Target
from tests import (
    test_addressing,
    test_cross_process,
    test_job_queue,
    test_mailbox,
    test_redis_faults,
    test_sessions_cli,
    test_webhooks,
)
from tests.harness import ChatClient, Replica, start_replica
from tests.test_webhooks import hooks_replica, session  # noqa: F401  # fixtures of the webhook test
from tests.topologies import (
    ClusterTopology,
    SentinelTopology,
    _admin,
    _following,
    _until,
    start_cluster,
    start_sentinel,
)

pytestmark = pytest.mark.topology

#: The single node runs these tests in their own modules (with the default `--redis-topology`).
TOPOLOGIES = ["sentinel", "cluster"]


def across(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """`test`, from its own module, once per topology (through the `topology` fixture parameter
    every Redis fixture depends on). A wrapper, so the original stays as it is in its module."""

    @functools.wraps(test)
    async def run(**fixtures: Any) -> None:
        await test(**fixtures)

    return pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True)(run)


test_hello_20_of_20 = across(
    test_cross_process.test_hello_on_replica_b_reaches_a_socket_on_replica_a_20_of_20
)
test_worker_processes_deliver = across(test_cross_process.test_worker_processes_deliver)
test_resume_on_another_replica = across(test_cross_process.test_resume_on_another_replica_keeps_the_session)
test_takeover_of_a_live_socket = across(
    test_cross_process.test_a_valid_resume_takes_over_the_live_socket_on_another_replica
)
test_replay_after_a_replica_is_killed = across(
    test_mailbox.test_replica_killed_midway_client_resumes_elsewhere_with_all_1000_in_order
)
test_replay_truncated = across(test_mailbox.test_offset_older_than_the_log_is_reported_before_what_is_left)
test_webhook_send = across(test_webhooks.test_valid_signature_delivers_and_returns_the_receipt)
test_user_addressing = across(
    test_addressing.test_user_messages_reach_each_of_the_users_sessions_once_and_no_other_replica
)
test_queued_job = across(test_job_queue.test_a_queued_job_streams_progress_to_a_socket_on_another_replica)
test_stale_detach = across(test_redis_faults.test_a_stale_detach_cannot_overwrite_the_new_holder)
test_bounded_connections = across(
    test_redis_faults.test_commands_beyond_the_connection_bound_wait_instead_of_failing
)
test_dead_replica_swept = across(test_redis_faults.test_sends_to_a_dead_replicas_session_queue_then_expire)
test_sessions_cli_list_show_tail = across(test_sessions_cli.test_list_show_and_tail)
test_broadcast = across(
    test_addressing.test_broadcast_reaches_every_live_session_on_every_replica_exactly_once
)


@dataclass
class Tally:
    """What a send loop saw, and what reached the client."""

    receipts: dict[int, Receipt] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    sends: int = 0

    def figures(self, client: ChatClient) -> dict[str, Any]:
        numbers = [
            int(m["output"][2:]) for m in client.received("new_message") if m["output"].startswith("n=")
        ]
        seen = collections.Counter(numbers)
        missing = sorted(set(self.receipts) - set(seen))
        return {
            "sends": self.sends,
            "receipts": len(self.receipts),
            "raised": len(self.failures),
            "delivered": len(seen),
            "receipted_not_delivered": len(missing),
            "told_of_reset": len(client.received("log_reset")),
            "duplicates": sum(c - 1 for c in seen.values() if c > 1),
        }


async def send_loop(
    send: Callable[[str], Awaitable[Receipt]],
    count: int,
    *,
    fault_at: int,
    fault: Callable[[], Awaitable[Any]],
    pace: float,
) -> tuple[Tally, Any]:
    """Send `count` numbered messages; at `fault_at` start `fault` (in the background) and from then
    on send one every `pace` seconds, so the sends span the fault. Every send returns or raises."""
    tally, faulting = Tally(), None
    for n in range(count):
        if n == fault_at:
            faulting = asyncio.create_task(fault())
        if faulting is not None:
            await asyncio.sleep(pace)  # pacing the load over the fault, not waiting for anything
        tally.sends += 1
        try:
            tally.receipts[n] = await send(f"n={n}")
        except BusUnavailable as exc:
            tally.failures[n] = str(exc)
    assert faulting is not None
    return tally, await faulting


async def settle(send: Callable[[str], Awaitable[Receipt]], client: ChatClient) -> None:
    """Send a last message until one is receipted, and wait until the client has it: everything
    sent before it had its chance to arrive."""
    for attempt in range(50):
        try:
            await send(f"last {attempt}")
            break
        except BusUnavailable:
            await asyncio.sleep(0.2)  # the bus is still failing over; try again
    else:
        raise AssertionError("the bus never accepted a send after the fault")
    await client.next("new_message", lambda m: m["output"].startswith("last "), timeout=30)


def check(tally: Tally, client: ChatClient, name: str) -> dict[str, Any]:
    figures = tally.figures(client)
    print(f"{name} figures: {figures}; first failures: {list(tally.failures.items())[:3]}")
    assert figures["duplicates"] == 0, figures
    if figures["receipted_not_delivered"]:
        assert figures["told_of_reset"] > 0, f"receipted messages were lost silently: {figures}"
    return figures


@pytest.fixture(params=["guarded", "unguarded"])
def own_sentinel(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SentinelTopology]:
    """With and without `min-replicas-to-write 1` on the primary."""
    topology = start_sentinel(tmp_path, guard=request.param == "guarded")
    yield topology
    topology.stop()


def replica_on(url: str, prefix: str, started: list[Replica]) -> Replica:
    replica = start_replica(
        {
            "SWITCHBOARD_REDIS_URL": url,
            "SWITCHBOARD_KEY_PREFIX": prefix,
            "SWITCHBOARD_REDIS_TIMEOUT_SECONDS": "1",
            "SWITCHBOARD_DRAIN_SECONDS": "1",  # stopped with its client connected: no long drain
        },
        name=f"replica-{len(started)}",
    )
    started.append(replica)
    return replica


@pytest.fixture
def started_replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.process.stop()
        print(f"--- {replica.process.name} ---\n{replica.process.output()}")


async def test_sentinel_failover_during_500_sends_loses_nothing_receipted(
    own_sentinel: SentinelTopology,
    prefix: str,
    clients: Callable[[], ChatClient],
    started_replicas: list[Replica],
) -> None:
    from workers import Client

    replica = replica_on(own_sentinel.url, prefix, started_replicas)
    client = await clients().connect(replica)
    old = own_sentinel.primary_port()
    settings = Settings(redis_url=own_sentinel.url, key_prefix=prefix, redis_timeout_seconds=1)
    async with Client(settings) as worker:
        send = functools.partial(worker.send_to_session, client.session_id)
        tally, new = await send_loop(
            send, 500, fault_at=250, fault=lambda: asyncio.to_thread(own_sentinel.failover), pace=0.08
        )
        assert new != old
        await settle(send, client)
    check(tally, client, f"sentinel ({'guarded' if own_sentinel.guarded else 'unguarded'})")
    # The replica's subscription followed the primary (the last message reached it live from there).
    assert "bus subscription lost" in replica.process.output(), replica.process.output()
    channel = Keys(prefix).channel(Target.session(client.session_id))
    assert _admin(new).pubsub_numsub(channel) == [(channel, 1)]


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[ClusterTopology]:
    topology = start_cluster(tmp_path)
    yield topology
    topology.stop()


def owner(topology: ClusterTopology, key: str) -> tuple[int, int]:
    """(the slot of `key`, the port of the primary that holds it)."""
    admin = sync_redis.RedisCluster(host="127.0.0.1", port=topology.primaries()[0])
    try:
        slot = admin.keyslot(key)
        return slot, int(admin.get_node_from_key(key).port)
    finally:
        admin.close()


def node_id(port: int) -> str:
    return str(_admin(port).execute_command("CLUSTER", "MYID"))


def cluster_failover(topology: ClusterTopology, primary: int) -> int:
    """`CLUSTER FAILOVER` on the primary's replica; returns the new primary once the cluster is ok
    and the old primary follows it."""
    replica = topology.replica_of(primary)
    _admin(replica).execute_command("CLUSTER", "FAILOVER")
    _until("the replica's promotion", lambda: _admin(replica).info("replication")["role"] == "master")
    _until("the old primary following the new one", lambda: _following(primary, replica))
    topology.wait_ok()
    return replica


def migrate_slot(topology: ClusterTopology, slot: int, source: int, target: int) -> None:
    """Move one slot with its keys (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE), as
    `redis-cli --cluster reshard` does for each slot."""
    src, dst = _admin(source), _admin(target)
    src_id, dst_id = node_id(source), node_id(target)
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    for port in topology.primaries():
        if port not in (source, target):
            _admin(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    topology.wait_ok()


async def cluster_send_loop(
    topology: ClusterTopology,
    prefix: str,
    clients: Callable[[], ChatClient],
    started: list[Replica],
    fault: Callable[[int, int], Any],
    name: str,
) -> str:
    """The failover test on a cluster; returns the session's id."""
    from workers import Client

    replica = replica_on(topology.url, prefix, started)
    client = await clients().connect(replica)
    slot, primary = owner(topology, Keys(prefix).session(client.session_id))
    settings = Settings(redis_url=topology.url, key_prefix=prefix, redis_timeout_seconds=1)
    async with Client(settings) as worker:
        send = functools.partial(worker.send_to_session, client.session_id)
        tally, _ = await send_loop(
            send, 500, fault_at=250, fault=lambda: asyncio.to_thread(fault, slot, primary), pace=0.02
        )
        await settle(send, client)
    check(tally, client, name)
    return client.session_id


def cluster_kill(topology: ClusterTopology, primary: int) -> int:
    """Kill the primary (SIGKILL); returns its replica once the cluster promoted it and is ok."""
    replica = topology.replica_of(primary)
    topology.by_port[primary].kill()
    _until("the replica's promotion", lambda: _admin(replica).info("replication")["role"] == "master")
    topology.wait_ok()
    return replica


@pytest.mark.parametrize("how", ["CLUSTER FAILOVER", "primary killed"])
async def test_cluster_failover_during_500_sends_loses_nothing_receipted(
    how: str,
    own_cluster: ClusterTopology,
    prefix: str,
    clients: Callable[[], ChatClient],
    started_replicas: list[Replica],
) -> None:
    moved: list[int] = []

    def fail_over(slot: int, primary: int) -> None:
        fault = cluster_failover if how == "CLUSTER FAILOVER" else cluster_kill
        moved.append(fault(own_cluster, primary))

    session_id = await cluster_send_loop(
        own_cluster, prefix, clients, started_replicas, fail_over, f"cluster, {how}"
    )
    assert moved and moved[0] in own_cluster.primaries()
    channel = Keys(prefix).channel(Target.session(session_id))
    assert channel in _admin(moved[0]).execute_command("PUBSUB", "SHARDCHANNELS")


async def test_cluster_slot_migration_during_500_sends_loses_nothing_receipted(
    own_cluster: ClusterTopology,
    prefix: str,
    clients: Callable[[], ChatClient],
    started_replicas: list[Replica],
) -> None:
    targets: list[int] = []

    def migrate(slot: int, primary: int) -> None:
        targets.append(next(p for p in own_cluster.primaries() if p != primary))
        migrate_slot(own_cluster, slot, primary, targets[0])

    session_id = await cluster_send_loop(
        own_cluster, prefix, clients, started_replicas, migrate, "cluster, slot migration"
    )
    # The session's keys moved with the slot, and its channel is subscribed on the new owner.
    assert holds_key(targets[0], Keys(prefix).session(session_id))
    channel = Keys(prefix).channel(Target.session(session_id))
    assert channel in _admin(targets[0]).execute_command("PUBSUB", "SHARDCHANNELS")


def holds_key(port: int, key: str) -> bool:
    return bool(_admin(port).exists(key))


@pytest.mark.parametrize("topology", TOPOLOGIES, indirect=True)
async def test_an_append_on_another_server_starts_a_new_log(bus: Bus) -> None:
    """What a promoted replica does with a record another server appended to last: a new epoch from
    offset 1, an empty log (its old entries may miss what the old primary appended)."""
    session_id = "L" * 24
    await bus.registry.create(session_id, user=None, thread_id=None, resume_token="t")
    target = Target.session(session_id)
    first = await bus.send(Envelope(target, "new_message", {"n": 1}, "t"))
    second = await bus.send(Envelope(target, "new_message", {"n": 2}, "t"))
    assert (first.offset, second.offset, second.epoch) == ("1-0", "2-0", first.epoch)
    await bus.store.hash_set(bus.keys.session(session_id), {"lineage": b"0" * 40}, None)
    after = await bus.send(Envelope(target, "new_message", {"n": 3}, "t"))
    assert after.offset == "1-0" and after.epoch != first.epoch
    assert [o for o, _ in (await bus.read_log(session_id, "0-0")).entries] == ["1-0"]
    again = await bus.send(Envelope(target, "new_message", {"n": 4}, "t"))
    assert (again.offset, again.epoch) == ("2-0", after.epoch)
