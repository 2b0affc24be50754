"""docs/configuration.md and `Settings.from_env` agree: the same variables, the documented defaults, and
the documented forms (what is accepted, what raises).

Written against what `from_env` does (the names it looks up, the settings it returns), not against the
source of bus/settings.py, so it keeps working wherever the settings code lives.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bus import Settings
from web import webhook_router

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()

#: The form column of the table: values it accepts, values that must raise ValueError.
FORMS: dict[str, tuple[list[str], list[str]]] = {
    "URL": (["redis://127.0.0.1:6379/0", "anything: the scheme is checked by Bus"], []),
    "string": (["any text, even with spaces"], []),
    "comma-separated strings": (["a, b,,c"], []),
    "boolean": (
        ["1", "true", "YES", "on", "0", "false", "No", "off"],
        ["maybe", "2", "enabled"],
    ),
    "float > 0": (["0.5", "12", "1_000", "1e3"], ["0", "-1", "soon", "inf", "-inf", "nan"]),
    "int > 0": (["1", "2048", "1_000"], ["0", "-1", "1.5", "1e6", "0x10", "inf", "nan"]),
    "int >= 0": (["0", "1", "60"], ["-1", "00", "1.5", "x"]),
    "path starting with `/`": (["/healthz", "/ops/ready"], ["healthz", "off"]),
    "path starting with `/`, or `off`": (["/metrics", "off"], ["metrics", "none"]),
    "`text` or `json`": (["text", "json", "JSON"], ["xml", "yaml"]),
    "float >= 0": (["0", "0.5", "10"], ["-1", "00", "x", "inf", "nan"]),
    "1 to 128 of `A-Z a-z 0-9 _ . : -`": (
        ["web-1", "pod_7.a:b", "x" * 128],
        ["x" * 129, "has space", "caf\u00e9", "a/b"],
    ),
    "`https://` URL (`http://` on loopback)": (
        ["https://idp.test/.well-known/jwks.json", "http://127.0.0.1:9/jwks", "http://localhost/jwks"],
        ["http://idp.test/jwks", "file:///etc/passwd", "https://", "ftp://idp.test/jwks"],
    ),
    "strings separated by spaces or commas": (["api", "api-1 api-2,api-3"], []),
    "algorithm names separated by spaces or commas": (
        ["RS256", "ES256, EdDSA PS512"],
        ["HS256", "none", "RS256 HS512", "rs256"],
    ),
    "float > 0, not above the cache time": (
        ["0.5", "12", "600"],
        ["0", "-1", "soon", "inf", "nan", "601"],
    ),
    "float > 0, not below the refresh interval": (
        ["60", "600", "1e4"],
        ["0", "-1", "soon", "inf", "nan", "59"],
    ),
    "origins separated by spaces or commas": (
        ["https://app.test", "http://127.0.0.1:5173, https://App.test:8443"],
        ["*", "https://app.test/", "app.test", "https://app.test/path", "ws://app.test"],
    ),
    "`whsec_` secrets, separated by spaces or commas": (
        [WHSEC, f"{WHSEC} {WHSEC},{WHSEC}"],
        ["not-whsec", "whsec_!!!", "whsec_" + base64.b64encode(b"short").decode()],
    ),
}


#: Variables that are valid only together: each is read with the others set to these values.
_JWKS = {
    "SWITCHBOARD_AUTH_JWKS_URL": "https://idp.test/.well-known/jwks.json",
    "SWITCHBOARD_AUTH_JWKS_ISSUER": "https://idp.test/",
    "SWITCHBOARD_AUTH_JWKS_AUDIENCE": "api",
}


def with_companions(variable: str, value: str) -> dict[str, str]:
    if variable in _JWKS:
        return {**_JWKS, variable: value}
    return {variable: value}


@dataclasses.dataclass(frozen=True)
class Row:
    variable: str
    form: str
    default: str


def documented() -> list[Row]:
    """The rows of the table under "## Settings"."""
    text = DOC.read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = re.fullmatch(r"\| `(SWITCHBOARD_\w+)` \| (.+?) \| (.+?) \|", line)
        if match:
            rows.append(Row(*match.groups()))
    assert len(rows) >= 10, f"no settings table found in {DOC}"
    return rows


class Recording(Mapping[str, str]):
    """An environment that holds `values` and records every name looked up in it."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self.values = dict(values or {})
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        self.read.add(str(name))
        return name in self.values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("Settings.from_env iterated the environment: this test needs names looked up")

    def __len__(self) -> int:
        return len(self.values)


def read_by_from_env() -> set[str]:
    env = Recording()
    Settings.from_env(env)
    return {name for name in env.read if name.startswith("SWITCHBOARD_")}


def comparable(settings: Settings) -> dict[str, Any]:
    """Every setting except the replica id, which is generated anew for each unset read."""
    values = dataclasses.asdict(settings)
    values.pop("replica_id")
    return values


def test_the_doc_lists_exactly_the_variables_from_env_reads() -> None:
    table = [row.variable for row in documented()]
    assert len(table) == len(set(table)), f"a variable appears twice in the table: {table}"
    read = read_by_from_env()
    assert set(table) == read, (
        f"documented but not read: {sorted(set(table) - read)}; read but not documented: "
        f"{sorted(read - set(table))}: update the table in docs/configuration.md"
    )
    mentioned = set(re.findall(r"SWITCHBOARD_[A-Z][A-Z_]*[A-Z]", DOC.read_text()))
    assert mentioned <= read, f"docs/configuration.md names variables that do not exist: {mentioned - read}"
    # A section of its own (### `NAME`) or a list item that starts with the name(s): "- `A`, `B`: ...".
    heads = re.findall(r"^(?:### |- )((?:`SWITCHBOARD_\w+`(?:, )?)+)", DOC.read_text(), re.MULTILINE)
    described = {name for head in heads for name in re.findall(r"SWITCHBOARD_\w+", head)}
    assert read <= described, f"variables without a description: {sorted(read - described)}"


@pytest.mark.parametrize("row", documented(), ids=lambda row: row.variable)
def test_documented_default_is_the_default(row: Row) -> None:
    unset = Settings.from_env({})
    literal = re.match(r"`([^`]+)`", row.default)
    if row.variable == "SWITCHBOARD_REPLICA_ID":
        assert row.default == "`<hostname>-<pid>-<6 random hex digits>`"
        pattern = f"{re.escape(socket.gethostname())}-{os.getpid()}-[0-9a-f]{{6}}"
        assert re.fullmatch(pattern, unset.replica_id), unset.replica_id
    elif literal:
        explicit = Settings.from_env({row.variable: literal[1]})
        assert comparable(explicit) == comparable(unset), f"{row.variable}={literal[1]} is not the default"
    elif row.default in ("off", "on"):
        explicit = Settings.from_env({row.variable: row.default})
        assert comparable(explicit) == comparable(unset), f"{row.variable}={row.default} is not the default"
    elif row.default.startswith(("unset", "none")):
        # Unset and empty are the same thing, and nothing else gives the unset value.
        assert comparable(Settings.from_env({row.variable: ""})) == comparable(unset)
        accepted = FORMS[row.form][0][0]
        assert comparable(Settings.from_env(with_companions(row.variable, accepted))) != comparable(unset), (
            row
        )
    elif row.variable == "SWITCHBOARD_REQUIRE_LOGIN":
        assert (
            row.default == "on if `SWITCHBOARD_AUTH_SECRET` or `SWITCHBOARD_AUTH_JWKS_URL` is set, else off"
        )
        assert Settings.from_env({}).login_required is False
        assert Settings.from_env({"SWITCHBOARD_AUTH_SECRET": "s" * 32}).login_required is True
        assert Settings.from_env(_JWKS).login_required is True
    else:
        pytest.fail(f"the default {row.default!r} of {row.variable} has no check here: add one")


@pytest.mark.parametrize("row", documented(), ids=lambda row: row.variable)
def test_documented_form_is_what_from_env_accepts(row: Row) -> None:
    assert row.form in FORMS, f"the form {row.form!r} of {row.variable} has no check here: add it to FORMS"
    accepted, refused = FORMS[row.form]
    if row.variable == "SWITCHBOARD_WEBHOOK_SECRETS":
        when = "An entry of another form is a `ValueError` when `webhook_router()` is called."
        assert when in " ".join(DOC.read_text().split()), "the doc no longer says when secrets are checked"
        for value in accepted:
            webhook_router(settings=Settings.from_env({row.variable: value}))
        for value in refused:
            with pytest.raises(ValueError, match=row.variable):
                webhook_router(settings=Settings.from_env({row.variable: value}))
        return
    for value in accepted:
        Settings.from_env(with_companions(row.variable, value))
        Settings.from_env(with_companions(row.variable, f"  {value}\t"))  # surrounding whitespace is stripped
    for value in refused:
        with pytest.raises(ValueError, match=row.variable):
            Settings.from_env(with_companions(row.variable, value))


def test_heartbeat_interval_is_the_documented_formula() -> None:
    assert "Derived heartbeat interval: `min(5, grace / 3)` seconds" in DOC.read_text()
    for grace in (0.3, 1.0, 14.0, 15.0, 300.0, 1e6):
        settings = Settings.from_env({"SWITCHBOARD_SESSION_GRACE_SECONDS": str(grace)})
        assert settings.heartbeat_seconds == pytest.approx(min(5, grace / 3)), grace


def test_quoted_error_messages_are_the_real_ones() -> None:
    text = " ".join(DOC.read_text().split())  # quotes may be wrapped across lines
    assert '"> 0" also excludes `inf` and `nan`' in text
    quoted = re.findall(r"`(?:ValueError: )?(\.\.\.|SWITCHBOARD_\w+) (must be [^`]*?), got '([^']*)'`", text)
    assert len(quoted) >= 4, quoted
    variables = [row.variable for row in documented()]
    for name, message, value in quoted:
        candidates = variables if name == "..." else [name]
        raised = []
        for variable in candidates:
            try:
                Settings.from_env({variable: value if value != "..." else "has space"})
            except ValueError as exc:
                raised.append(str(exc))
        assert any(f" {message}, got " in error for error in raised), (name, message, value, raised)
