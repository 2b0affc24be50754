"""`make mutate` prints this: the mutation score per module from mutmut's result files in mutants/.

Each mutant's result is mutmut's exit code, read with mutmut's own table (`mutmut.stats`):
killed: a test failed, the run timed out or crashed, or the type checker refused the mutant;
survived: every test passed; no tests: no selected test reaches the mutated function (exit code 33),
which is a gap, never a kill. The score is killed / (killed + survived + no tests); mutants that were
not run (not checked, skipped) are left out and counted on their own line.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

#: What `make mutate` mutates (the Makefile's MUTANTS, the only_mutate of [tool.mutmut]).
MODULES = ["bus/envelope.py", "web/auth.py", "web/webhooks.py", "web/signatures.py", "web/mailbox.py"]
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
#: Counted against the score: the mutant ran (or could not be reached) and no test failed.
NOT_KILLED = {"survived", "no tests", "suspicious"}


def classify(codes: dict[str, int | None]) -> tuple[Counter[str], dict[str, str]]:
    """Counts by status, and the status of each mutant that was not killed."""
    counts: Counter[str] = Counter()
    left: dict[str, str] = {}
    for name, code in codes.items():
        status = status_by_exit_code[code]
        counts[status] += 1
        if status in NOT_KILLED:
            left[name] = status
    return counts, left


def main() -> int:
    root = Path("mutants")
    if not root.is_dir():
        print("no mutants/ directory: run `make mutate` first", file=sys.stderr)
        return 1
    print(f"{'module':<20} {'killed':>7} {'survived':>9} {'no tests':>9} {'not run':>8} {'score':>7}")
    for module in MODULES:
        meta = root / f"{module}.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        counts, left = classify(codes)
        killed = sum(counts[s] for s in KILLED)
        survived = counts["survived"] + counts["suspicious"]
        untested = counts["no tests"]
        not_run = sum(counts.values()) - killed - survived - untested
        ran = killed + survived + untested
        score = f"{100 * killed / ran:.1f}%" if ran else "-"
        print(f"{module:<20} {killed:>7} {survived:>9} {untested:>9} {not_run:>8} {score:>7}")
        for name, status in sorted(left.items()):
            print(f"    {status}: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
