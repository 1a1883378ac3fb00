"""The manifest: what a run read and wrote, by sha256, and the environment it ran in.

`./run.sh reproduce` writes it to outputs/<profile>/manifest.json; `./run.sh verify`
recomputes every hash in it and re-runs submit. Paths are relative to the
repository root, so a manifest made outside Docker checks inside the container
(/workspace) and the other way round. A file that is not there (an optional
output, a stage not run yet) is recorded as missing; it never makes this fail.
"""
from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from maerak.clean import RULES_FILE
from maerak.files import atomic_write_json, rel_path, sha256_file, sha256_tree
from maerak.profiles import ROOT, SPLITS, Profile

SCHEMA = 1
PACKAGES = ("torch", "transformers", "peft", "axolotl", "bitsandbytes", "accelerate", "datasets", "tokenizers",
            "safetensors", "deepspeed", "flash-attn")
DEEPSPEED_DIR = "axolotl_configs/deepspeed"
# Groups, in the order verify prints them.
GROUPS = ("inputs", "base_model", "configs", "prepared", "checkpoint", "outputs")


def file_entry(profile: Profile, group: str, path: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"group": group, "path": rel_path(path, profile.root)}
    if path.is_file():
        entry["sha256"] = sha256_file(path)
        entry["bytes"] = path.stat().st_size
    else:
        entry["sha256"] = None
        entry["missing"] = True
    return entry


def tree_entries(profile: Profile, group: str, path: Path) -> list[dict[str, Any]]:
    """One entry per file of a folder, each tagged with the folder (verify also flags files added to it)."""
    if not path.is_dir():
        entry = file_entry(profile, group, path)
        entry["tree"] = rel_path(path, profile.root)
        return [entry]
    tree = rel_path(path, profile.root)
    out = []
    for rel, digest in sha256_tree(path).items():
        rel = Path(rel).as_posix()
        out.append({"group": group, "path": f"{tree}/{rel}", "sha256": digest,
                    "bytes": (path / rel).stat().st_size, "tree": tree})
    return out


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(root: Path) -> dict[str, Any]:
    """The commit of the code that ran; inside the image (no .git) the one baked in at build time."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip()), "source": "git"}
    except (OSError, subprocess.SubprocessError):
        env = os.environ.get("MAERAK_GIT_COMMIT")
        if env and env != "unknown":
            return {"commit": env, "dirty": None, "source": "image build arg GIT_COMMIT"}
        return {"commit": None, "dirty": None, "source": "not available"}


def submission_compare(profile: Profile) -> str:
    """How verify compares a re-run submission: bytes on the CPU float32 profile (scoring is
    bit-deterministic there), predicted labels on GPU profiles (bf16 kernels are not)."""
    gpu = profile.config.needs_gpu or profile.config.scoring.dtype != "float32"
    return "labels" if gpu else "bytes"


def collect_files(profile: Profile) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    # Inputs: the official-format splits of the profile.
    for split in SPLITS:
        files.append(file_entry(profile, "inputs", profile.split_file(split)))
    # The base model, when it is a local folder (a hub id is recorded by name, not hashed).
    if profile.base_model_is_local:
        files += tree_entries(profile, "base_model", Path(profile.base_model))
    # Configs: profiles, the Axolotl YAMLs (the files Axolotl ran, as they are), the data sources, DeepSpeed.
    files.append(file_entry(profile, "configs", profile.root / "profiles.yml"))
    for stage in profile.training_stages:
        files.append(file_entry(profile, "configs", profile.axolotl_config(stage)))
    files.append(file_entry(profile, "configs", profile.root / RULES_FILE.relative_to(ROOT)))  # both stages' cleaning rules
    files.append(file_entry(profile, "configs", profile.sources))
    ds_dir = profile.root / DEEPSPEED_DIR
    for path in sorted(ds_dir.glob("*.json")) if ds_dir.is_dir() else []:
        files.append(file_entry(profile, "configs", path))
    # Prepared training data.
    for path in (*(profile.stage_data(n) for n in profile.training_stages), profile.prepared / "report.json"):
        files.append(file_entry(profile, "prepared", path))
    # The final checkpoint (stage 2, or stage 3 with preference: true): every file, so a changed weight or tokenizer byte shows.
    files += tree_entries(profile, "checkpoint", profile.final_dir)
    # What the checkpoint produced.
    files.append(file_entry(profile, "outputs", profile.submission))
    files.append(file_entry(profile, "outputs", profile.dev_predictions))
    return files


def build_manifest(profile: Profile, extra: dict | None = None) -> dict:
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "profile": profile.name,
        "seed": profile.seed,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git": git_state(profile.root),
        "packages": package_versions(),
        "base_model": {"name": profile.base_model_name, "local": profile.base_model_is_local},
        "submit": {
            "checkpoint": rel_path(profile.final_dir, profile.root),
            "input": rel_path(profile.split_file("test"), profile.root),
            "submission": rel_path(profile.submission, profile.root),
            "compare": submission_compare(profile),
            "scoring": profile.scoring,
        },
        "files": collect_files(profile),
    }
    if extra:
        manifest.update(extra)
    return manifest


def write_manifest(profile: Profile, extra: dict | None = None) -> Path:
    return atomic_write_json(profile.manifest, build_manifest(profile, extra))
