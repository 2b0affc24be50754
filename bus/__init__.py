"""The Switchboard bus: envelopes, Redis and in-memory transports, and the session registry."""

from bus.backend import BusUnavailable
from bus.envelope import Envelope, EnvelopeError, Target
from bus.registry import SessionRecord, SessionRegistry, valid_session_id
from bus.settings import Settings, get_settings
from bus.transport import Bus, BusStats

__all__ = [
    "Bus",
    "BusStats",
    "BusUnavailable",
    "Envelope",
    "EnvelopeError",
    "SessionRecord",
    "SessionRegistry",
    "Settings",
    "Target",
    "get_settings",
    "valid_session_id",
]
