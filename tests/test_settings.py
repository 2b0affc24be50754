import base64

import pytest

from bus import Settings
from web import webhook_router

WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()


def test_reads_every_variable_once_with_its_type() -> None:
    settings = Settings.from_env(
        {
            "SWITCHBOARD_REDIS_URL": "redis://127.0.0.1:6390/2",
            "SWITCHBOARD_REPLICA_ID": "web-1",
            "SWITCHBOARD_SESSION_GRACE_SECONDS": "12.5",
            "SWITCHBOARD_MAX_ENVELOPE_BYTES": "2048",
            "SWITCHBOARD_AUTH_PREVIOUS_SECRETS": "a, b ,,c",
            "SWITCHBOARD_REQUIRE_LOGIN": "no",
            "SWITCHBOARD_WEBHOOK_SECRETS": f"{WHSEC} {WHSEC},{WHSEC}",
            "SWITCHBOARD_WEBHOOK_RATE_LIMIT": "0",
            "SWITCHBOARD_DATA_PERSISTENCE": "true",
        }
    )
    assert settings.bus_url == "redis://127.0.0.1:6390/2" and settings.replica_id == "web-1"
    assert settings.session_grace_seconds == 12.5 and settings.heartbeat_seconds == 12.5 / 3
    assert settings.max_envelope_bytes == 2048 and settings.auth_previous_secrets == ("a", "b", "c")
    assert settings.require_login is False and not settings.login_required
    assert settings.webhook_secrets == (WHSEC,) * 3 and settings.webhook_rate_limit == 0
    assert settings.data_persistence is True
    assert Settings.from_env({}).bus_url == "memory://"


def test_secrets_stay_out_of_the_repr() -> None:
    settings = Settings(auth_secret="s3cr3t-value", webhook_secrets=("whsec_hidden",))
    assert "s3cr3t-value" not in repr(settings) and "whsec_hidden" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SESSION_GRACE_SECONDS", "soon", "must be a float"),
        ("SESSION_GRACE_SECONDS", "-1", "positive finite"),
        ("SESSION_GRACE_SECONDS", "inf", "positive finite"),
        ("SESSION_GRACE_SECONDS", "nan", "positive finite"),
        ("MAX_ENVELOPE_BYTES", "1.5", "must be an int"),
        ("REQUIRE_LOGIN", "maybe", "true or false"),
        ("REPLICA_ID", "x" * 200, "REPLICA_ID"),
        ("REPLICA_ID", "has space", "REPLICA_ID"),
    ],
)
def test_bad_values_fail_loudly_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env({f"SWITCHBOARD_{name}": value})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not-whsec", "whsec_"),
        ("whsec_!!!", "whsec_"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24-64 bytes"),
    ],
)
def test_bad_webhook_secrets_stop_the_start(value: str, message: str) -> None:
    """Checked when the webhook router is built, i.e. when the app module is imported."""
    settings = Settings.from_env({"SWITCHBOARD_WEBHOOK_SECRETS": value})
    with pytest.raises(ValueError, match=message):
        webhook_router(settings=settings)
