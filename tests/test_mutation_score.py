"""tests/mutation_score.py (what `make mutate` prints) counts only real kills."""

import json
from pathlib import Path

import pytest

from tests import mutation_score


def test_no_tests_and_survivors_count_against_the_score_timeouts_and_crashes_for_it() -> None:
    codes = {"a": 1, "b": 0, "c": 33, "d": 36, "e": -11, "f": None, "g": 3, "h": 37}
    counts, left = mutation_score.classify(codes)
    assert left == {"b": "survived", "c": "no tests"}
    assert counts["killed"] == 2 and counts["timeout"] == 1 and counts["not checked"] == 1


def test_the_modules_are_the_ones_make_mutate_mutates() -> None:
    text = Path("pyproject.toml").read_text()
    only = text.split("only_mutate = ", 1)[1].split("\n", 1)[0]
    assert json.loads(only) == mutation_score.MODULES
    makefile = Path("Makefile").read_text().split("MUTANTS := ", 1)[1].split("\n", 1)[0]
    assert makefile.split() == [
        f'"{m.removesuffix(".py").replace("/", ".")}.*"' for m in mutation_score.MODULES
    ]


def test_the_printed_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mutants" / "web").mkdir(parents=True)
    meta = {
        "exit_code_by_key": {
            "web.mailbox.x_a__mutmut_1": 1,
            "web.mailbox.x_a__mutmut_2": 33,
            "web.mailbox.x_a__mutmut_3": 0,
            "web.mailbox.x_a__mutmut_4": 1,
        }
    }
    (tmp_path / "mutants" / "web" / "mailbox.py.meta").write_text(json.dumps(meta))
    monkeypatch.chdir(tmp_path)
    assert mutation_score.main() == 0
    out = capsys.readouterr().out
    (line,) = [row for row in out.splitlines() if row.startswith("web/mailbox.py")]
    assert line.split() == ["web/mailbox.py", "2", "1", "1", "0", "50.0%"]
    assert (
        "    no tests: web.mailbox.x_a__mutmut_2" in out and "    survived: web.mailbox.x_a__mutmut_3" in out
    )
