"""`make mutate` prints this: the mutation score per module from mutmut's result files in mutants/.

Killed: a test failed (exit code 1) or the mutant timed out / crashed the run; survived: every test
passed (exit code 0). Mutants that were not run (other functions of web/server.py) are not counted.
"""

import json
import sys
from pathlib import Path

MODULES = ["bus/envelope.py", "web/auth.py", "web/webhooks.py", "web/server.py"]


def main() -> int:
    root = Path("mutants")
    if not root.is_dir():
        print("no mutants/ directory: run `make mutate` first", file=sys.stderr)
        return 1
    print(f"{'module':<20} {'killed':>7} {'survived':>9} {'score':>7}")
    for module in MODULES:
        meta = root / f"{module}.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        ran = {name: code for name, code in codes.items() if code is not None}
        survived = sorted(name for name, code in ran.items() if code == 0)
        killed = len(ran) - len(survived)
        score = f"{100 * killed / len(ran):.1f}%" if ran else "-"
        print(f"{module:<20} {killed:>7} {len(survived):>9} {score:>7}")
        for name in survived:
            print(f"    survived: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
