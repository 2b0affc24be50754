"""Schemathesis fuzzes the webhook endpoints of a real replica from the app's own OpenAPI schema."""

import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bus import Settings
from tests.harness import Replica, start_replica
from web import User, create_jwt

AUTH_SECRET = "f" * 48
SERVICE = create_jwt(User("service:fuzz"), settings=Settings(auth_secret=AUTH_SECRET), scope="sessions:send")


@pytest.fixture(scope="module")
def fuzz_replica(redis_url: str) -> Iterator[Replica]:
    env = {
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_KEY_PREFIX": f"fz{uuid.uuid4().hex[:8]}",
        "SWITCHBOARD_WEBHOOK_SECRETS": "whsec_" + "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4",
        "SWITCHBOARD_AUTH_SECRET": AUTH_SECRET,
        "SWITCHBOARD_REQUIRE_LOGIN": "false",
    }
    replica = start_replica(env, name="fuzz")
    yield replica
    replica.process.stop()


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("authenticated", [False, True])
def test_webhooks_never_answer_5xx(fuzz_replica: Replica, authenticated: bool) -> None:
    """Every webhook operation, with generated paths, headers and bodies: no 5xx, documented answers."""
    schema = schemathesis.openapi.from_url(f"{fuzz_replica.url}/openapi.json").include(path_regex="^/hooks/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 3
    extra = {"Authorization": f"Bearer {SERVICE}"} if authenticated else {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={**(case.headers or {}), **extra}, checks=CHECKS, timeout=10)

        call()
    answered = [line for line in fuzz_replica.process.lines if '"POST /hooks/' in line]
    assert len(answered) >= 3 * 20  # the fuzzer really reached the replica
    statuses = sorted({line.split('" ')[-1][:3] for line in answered})
    print(f"{len(answered)} webhook requests answered so far; statuses {statuses}")
    assert all(not status.startswith("5") for status in statuses)
