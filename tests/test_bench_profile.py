"""bench/profile.py names functions by "<function> <file name>": each group of the table bench/README.md
quotes must still name code that exists, or its row prints 0.0 us (as when bus/transport.py became
bus/core.py). Code that exists but is no longer called (PubSub.get_message) shows only in a run:
`python -m bench.profile --n 3000` must print no 0.0 row."""

import functools
import re
import sysconfig
from pathlib import Path

import pytest

from bench.profile import GROUPS
from tests.harness import ROOT

PLACES = [*(ROOT / top for top in ("bus", "web", "workers", "bench")), Path(sysconfig.get_paths()["purelib"])]


@functools.cache
def files(file_name: str) -> list[Path]:
    """The project's, the installed packages' and the standard library's files of that name."""
    found = [path for place in PLACES for path in place.rglob(file_name)]
    stdlib = Path(sysconfig.get_paths()["stdlib"]) / file_name  # e.g. selectors.py
    return [*found, stdlib] if stdlib.exists() else found


def defines(function: str, file_name: str) -> bool:
    """Whether a project, installed or standard library file of that name defines `function`."""
    candidates = files(file_name)
    definition = re.compile(rf"^\s*(async\s+)?def {re.escape(function)}\(", re.M)
    return any(definition.search(path.read_text(errors="replace")) for path in candidates)


def parts(pattern: str) -> list[tuple[str, str]]:
    """The (function, file) pairs of a pattern ("A > B": B within A); a bare name has no file."""
    found = []
    for part in pattern.split(" > "):
        function, _, file_name = part.partition(" ")
        if file_name:
            found.append((function.rsplit(".", 1)[-1], file_name))
    return found


@pytest.mark.parametrize(
    ("process", "label"), [(process, label) for process, groups in GROUPS.items() for label, _ in groups]
)
def test_every_group_names_code_that_exists(process: str, label: str) -> None:
    (patterns,) = [patterns for name, patterns in GROUPS[process] if name == label]
    resolving = [p for p in patterns if all(defines(f, file_name) for f, file_name in parts(p))]
    assert resolving, f"no pattern of {label!r} names an existing function: {patterns}"


def test_a_pattern_naming_a_file_that_is_gone_is_caught() -> None:
    assert not all(defines(f, name) for f, name in parts("_receive transport.py"))
    assert all(defines(f, name) for f, name in parts("_receive core.py > decode envelope.py"))
