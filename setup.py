"""Build hook: the package ships the chat page's Socket.IO browser client.

Project metadata lives in pyproject.toml; this file only adds one step to `build_py` (wheels) and `sdist`:
copy `socket.io.min.js`, its source map and its licence from the npm package `socket.io-client` (the version
pinned by package-lock.json, installed with `npm ci`) into `web/static/vendor/`, which git ignores and
package-data ships. So the client is taken from npm at build time and never committed.

- In a checkout: `node_modules` must hold the pinned version; if it does not, the build runs
  `npm ci --no-audit --no-fund`, and fails with a clear message when that is not possible.
- In an unpacked sdist (it has PKG-INFO and no package-lock.json): the sdist carries the copied files,
  so a wheel built from it needs neither npm nor node_modules.
- Editable installs (`pip install -e .`) try the same but do not fail without npm; web/page.py also
  finds the client in node_modules beside the project (`make demo` and `make test` run `npm ci`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info
from setuptools.command.sdist import sdist
from setuptools.errors import SetupError

ROOT = Path(__file__).resolve().parent
NPM_PACKAGE = "socket.io-client"
INSTALLED = ROOT / "node_modules" / NPM_PACKAGE
VENDOR = ROOT / "web" / "static" / "vendor"
#: Vendored file -> its path inside the npm package.
FILES = {
    "socket.io.min.js": "dist/socket.io.min.js",
    "socket.io.min.js.map": "dist/socket.io.min.js.map",
    "socket.io-client.LICENSE": "LICENSE",
}
NPM_CI = ["npm", "ci", "--no-audit", "--no-fund"]


def vendor_client(*, strict: bool) -> None:
    """Put the pinned socket.io-client files into web/static/vendor/.

    Strict (`build_py` of a wheel, `sdist`): fail the build saying why when that is not possible. Not strict
    (`egg_info`, the first step of every build, which cannot tell an editable install from a wheel build,
    and `build_py` of an editable install): when npm is missing or fails, leave things as they are.
    """
    lock = ROOT / "package-lock.json"
    if not lock.is_file():
        if (ROOT / "PKG-INFO").is_file():  # an unpacked sdist: it carries the files
            missing = [name for name in FILES if not (VENDOR / name).is_file()]
            if missing and strict:
                raise SetupError(
                    f"this sdist lacks web/static/vendor/{', '.join(missing)} (the Socket.IO client); "
                    "it was built incorrectly: build it again from a checkout with `python -m build`"
                )
            return
        raise SetupError(f"{lock} is missing: it pins {NPM_PACKAGE}, the chat page's browser client")
    pinned = json.loads(lock.read_text())["packages"][f"node_modules/{NPM_PACKAGE}"]["version"]
    if _installed_version() != pinned:
        npm = shutil.which("npm")
        if npm is None:
            if not strict:
                return
            raise SetupError(
                f"the chat page needs the npm package {NPM_PACKAGE} {pinned} (pinned by package-lock.json) "
                f"and npm is not installed: install npm (Debian: `apt-get install npm`) and run "
                f"`npm ci` in {ROOT}, then build again"
            )
        print(f"switchboard: node_modules lacks {NPM_PACKAGE} {pinned}; running `{' '.join(NPM_CI)}`")
        ran = subprocess.run([npm, *NPM_CI[1:]], cwd=ROOT, check=False)  # noqa: S603
        if _installed_version() != pinned:
            if not strict:
                return
            raise SetupError(
                f"`{' '.join(NPM_CI)}` (exit code {ran.returncode}) did not install {NPM_PACKAGE} {pinned} "
                f"into {INSTALLED}: run it in {ROOT} and build again"
            )
    VENDOR.mkdir(parents=True, exist_ok=True)
    for name, source in FILES.items():
        _copy_if_changed(INSTALLED / source, VENDOR / name)


def _installed_version() -> str | None:
    try:
        version = json.loads((INSTALLED / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return str(version)


def _copy_if_changed(source: Path, target: Path) -> None:
    """Copy atomically (a server reading the old file never sees a partial one); skip identical files."""
    data = source.read_bytes()
    if target.is_file() and target.read_bytes() == data:
        return
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, target)


class EggInfo(egg_info):
    """The first step of every build: copying here keeps the file list and the data files in step."""

    def run(self) -> None:
        vendor_client(strict=False)
        super().run()


class BuildPy(build_py):
    def run(self) -> None:
        vendor_client(strict=not self.editable_mode)
        self.__dict__.pop("data_files", None)  # globbed before the copy: glob again
        super().run()


class SDist(sdist):
    def run(self) -> None:
        vendor_client(strict=True)
        super().run()


setup(cmdclass={"egg_info": EggInfo, "build_py": BuildPy, "sdist": SDist})
