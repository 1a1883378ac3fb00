"""`make lock-check`: requirements.lock against what torch 2.13.0's Linux wheel requires, offline.

The lock is resolved on a CPU host, where torch declares no triton and no CUDA packages; on a CUDA
host (and in the image) torch pins them (`triton==3.7.1`). A lock pin that a CUDA torch excludes
makes `make setup` stop with a resolver conflict on exactly the machines the product is for. This
is the dry-run resolution of the lock against the CUDA wheel's metadata, vendored as its
Requires-Dist lines (.ci/torch-2.13.0-linux-requires.txt; how it was read is in its header): each
requirement that applies on Linux x86_64 for the Pythons we install on (3.11 here, 3.12 in the
image) and names a package the lock pins must accept the pinned version. One line per conflict,
exit 1; nothing downloaded.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
TORCH_REQUIRES = ROOT / ".ci" / "torch-2.13.0-linux-requires.txt"
# The hosts `make setup` and the image install on: Linux x86_64, CPython 3.11 (.venv) and 3.12 (the image's base).
ENVIRONMENTS = [{"platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64",
                 "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython",
                 "python_version": v, "python_full_version": f"{v}.0", "extra": ""} for v in ("3.11", "3.12")]


def lock_pins(text: str, name: str = "requirements.lock") -> dict[str, tuple[int, str]]:
    """{canonical name: (line number, version)} of the lock's `name==version` lines."""
    pins = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line:
            raise ValueError(f"{name}:{n}: {line!r} is not an exact pin (name==version)")
        pkg, version = line.split("==", 1)
        pins[canonicalize_name(pkg.split("[", 1)[0])] = (n, version.split(";", 1)[0].strip())
    return pins


def requirements(text: str) -> list[Requirement]:
    return [Requirement(line) for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]


def conflicts(lock_text: str, requires_text: str, lock_name: str = "requirements.lock") -> list[str]:
    """One line per lock pin that a requirement of torch (on a target environment) rejects."""
    pins = lock_pins(lock_text, lock_name)
    out = []
    for req in requirements(requires_text):
        envs = [e for e in ENVIRONMENTS if req.marker is None or req.marker.evaluate(e)]
        name = canonicalize_name(req.name)
        if not envs or name not in pins:
            continue
        line, version = pins[name]
        if not req.specifier.contains(version, prereleases=True):
            pys = ", ".join(e["python_version"] for e in envs)
            out.append(f"{lock_name}:{line}: {req.name}=={version} conflicts with torch 2.13.0's Linux wheel, which "
                       f"requires {req.name}{req.specifier} (Python {pys}; {TORCH_REQUIRES.relative_to(ROOT)}): "
                       f"pin {req.name} as torch does, or leave it out of the lock")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.lock_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--lock", type=Path, default=LOCK)
    ap.add_argument("--torch-requires", type=Path, default=TORCH_REQUIRES)
    args = ap.parse_args(argv)
    try:
        found = conflicts(args.lock.read_text(encoding="utf-8"), args.torch_requires.read_text(encoding="utf-8"),
                          args.lock.name)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    if not found:
        print(f"{args.lock.name}: consistent with torch 2.13.0's Linux (CUDA) wheel requirements")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
