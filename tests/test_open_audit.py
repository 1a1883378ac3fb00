"""The file-open audit: run pipeline steps while recording every file each one opens for reading
(tests/audit/sitecustomize.py: Python's audit hook on "open", in the step's process and every
Python subprocess it starts), and fail when a step reads a project file that
pipeline/reproduce.py `plan()` does not declare: its inputs, its code, its own outputs and caches.
Files outside the project (site-packages, the hub cache, /proc) are not the stamps' business.

The fast test runs prepare, submit, predict-dev and evaluate of a `tiny` profile (the sample data
and recipe, a tiny Gemma-3 built in the test as base and final model); the e2e test every step
of `reproduce --profile sample` in a copy of the repository.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import save_tiny_checkpoint

from maerak.profiles import Profile
from pipeline.reproduce import Step, plan

ROOT = Path(__file__).resolve().parent.parent
HOOK = Path(__file__).resolve().parent / "audit"
# Not data: the environment, the interpreter's caches, git, and the pipeline's own bookkeeping.
IGNORED = (".venv", ".venv-vllm", ".git", "__pycache__", ".stamps")


def run_step(root: Path, step: Step, log: Path) -> set[Path]:
    """Runs the step's verb as `./run.sh` would, in its own process; returns the files it read."""
    from pipeline.cli import VERBS

    verb = VERBS[step.verb]
    env = {**os.environ, "MAERAK_OPEN_LOG": str(log), "PYTHONPATH": f"{HOOK}{os.pathsep}{root}",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    code = f"import sys; from pipeline.cli import run_verb; sys.exit(run_verb({step.verb!r}, {list(step.argv)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{step.name} ({verb.module}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    read = set()
    for part in log.parent.glob(f"{log.name}.*"):
        read |= {Path(line) for line in part.read_text(encoding="utf-8").splitlines() if line}
        part.unlink()
    return read


def undeclared(root: Path, step: Step, read: set[Path]) -> list[str]:
    """Project files the step read that are neither its inputs, code, outputs nor caches."""
    real = lambda p: Path(os.path.realpath(p))  # noqa: E731
    root = real(root)
    allowed = [real(p) for p in (*step.inputs, *step.code, *step.outputs, *step.caches)]
    out = []
    for path in sorted(read):
        path = real(path)
        if root not in path.parents or any(part in IGNORED for part in path.relative_to(root).parts):
            continue
        if not path.is_file() and not path.exists():
            continue  # a probe for a file that is not there (e.g. an optional tokenizer file)
        if path.is_dir() or any(path == a or a in path.parents for a in allowed):
            continue
        out.append(str(path.relative_to(root)))
    return out


def copy_root(dest: Path) -> Path:
    """The checkout's tracked and untracked-not-ignored files, with its environment linked."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    (dest / ".venv").symlink_to((ROOT / ".venv").resolve())
    return dest


def audit(root: Path, profile: Profile, names: list[str], tmp: Path) -> dict[str, list[str]]:
    found = {}
    for step in plan(profile):
        if step.name in names:
            found[step.name] = undeclared(root, step, run_step(root, step, tmp / f"open-{step.name}.log"))
    assert sorted(found) == sorted(names)
    return found


def test_prepare_and_submit_read_only_what_the_plan_declares(tmp_path):
    from test_kill_resume import make_root

    root = make_root(tmp_path / "repo")
    import yaml

    settings = yaml.safe_load((root / "profiles.yml").read_text(encoding="utf-8"))["tiny"]
    profile = Profile(name="tiny", settings=settings, root=root)
    save_tiny_checkpoint(profile.final_dir)  # stands in for the trained checkpoint submit scores
    found = audit(root, profile, ["validate", "prepare", "submit", "predict-dev", "evaluate"], tmp_path)
    assert found == {name: [] for name in found}


@pytest.mark.e2e
def test_every_step_of_the_sample_reproduce_reads_only_what_the_plan_declares(tmp_path):
    from maerak.profiles import resolve_profile

    root = copy_root(tmp_path / "repo")
    built = ROOT / "models" / "gemma-3-270m"
    if (built / "config.json").is_file():  # the embedded model, when built already (else the `model` step builds it)
        shutil.copytree(built, root / "models" / "gemma-3-270m", copy_function=os.link)
    sample, _ = resolve_profile("sample", announce=False)
    profile = Profile(name="sample", settings=sample.settings, root=root)
    names = [s.name for s in plan(profile)]
    found = audit(root, profile, names, tmp_path)
    assert found == {name: [] for name in names}
