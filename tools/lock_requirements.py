"""``make lock``: pin what the development venv has installed, split into runtime and development.

* ``requirements.txt``: the runtime pins, i.e. the top-level requirements of ``requirements.in``
  and everything they need (the installed distributions' ``Requires-Dist``, with the extras the
  ``.in`` asks for and the markers evaluated for this interpreter), at the installed versions.
  The Docker image installs only this file.
* ``requirements-dev.txt``: ``-r requirements.txt`` plus every other installed distribution
  (``requirements-dev.in``'s tools and test packages and what they alone need), so that
  ``make install`` reproduces the venv.

The venv is the resolver (as ``pip freeze`` was): install or upgrade first (``pip install -r
requirements-dev.in``), then lock. Fails when a runtime requirement is not installed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_HEADER = (
    "# Runtime pins: the resolved set of requirements.in for Python 3.11 (Airflow 3.3.2), what the\n"
    "# Docker image installs. Development tools and tests: requirements-dev.txt. Regenerate with `make lock`.\n"
)
DEV_HEADER = (
    "# Development pins: the runtime set plus requirements-dev.in's tools and tests and what only they\n"
    "# need (`make install` installs this file). Regenerate with `make lock`.\n"
    "-r requirements.txt\n"
)


def top_level(path: Path) -> list[Requirement]:
    """The requirements of a ``.in`` file (comments and ``-r`` lines skipped)."""
    reqs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            reqs.append(Requirement(line))
    return reqs


def closure(roots: list[Requirement]) -> set[str]:
    """Canonical names of ``roots`` and of every installed distribution they require."""
    extras_of: dict[str, set[str]] = {}
    todo = [(canonicalize_name(r.name), set(r.extras)) for r in roots]
    while todo:
        name, extras = todo.pop()
        if name in extras_of and extras <= extras_of[name]:
            continue
        extras_of[name] = extras_of.get(name, set()) | extras
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{name} is required but not installed in {sys.prefix}: install first, then lock") from None
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras_of[name])):
                todo.append((canonicalize_name(req.name), set(req.extras)))
    return set(extras_of)


def freeze() -> list[str]:
    """``pip freeze`` of this interpreter; torch's local version (``+cpu``) dropped, so the pin
    also matches the CUDA build that PyPI serves on linux/x86_64."""
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                         capture_output=True, text=True, check=True).stdout
    lines = [line.strip() for line in out.splitlines() if "==" in line]
    return [line.split("+", 1)[0] if line.startswith("torch==") else line for line in lines]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(ROOT), help="folder of the requirements files")
    args = ap.parse_args(argv)
    root = Path(args.root)
    runtime = closure(top_level(root / "requirements.in"))
    pins = freeze()
    is_runtime = [canonicalize_name(p.split("==", 1)[0]) in runtime for p in pins]
    (root / "requirements.txt").write_text(RUNTIME_HEADER + "".join(f"{p}\n" for p, r in zip(pins, is_runtime) if r))
    (root / "requirements-dev.txt").write_text(DEV_HEADER + "".join(f"{p}\n" for p, r in zip(pins, is_runtime) if not r))
    print(f"requirements.txt: {sum(is_runtime)} pins; requirements-dev.txt: {len(pins) - sum(is_runtime)} more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
