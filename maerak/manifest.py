"""The manifest: what a run read and wrote, by sha256, and the environment it ran in.

`./run.sh reproduce` writes it to outputs/<profile>/manifest.json; `./run.sh verify`
recomputes every hash in it (every file of the checkpoint and of eval/, hidden ones too), re-runs
submit and recomputes the dev accuracy from the dev predictions and gold. Paths are relative to the
repository root, so a manifest made outside Docker checks inside the container
(/workspace) and the other way round. A file that is not there (an optional
output, a stage not run yet) is recorded as missing; it never makes this fail.
"""
from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from maerak import fingerprint as fp
from maerak.clean import RULES_FILE
from maerak.errors import ConfigError, DataError, InputFileError
from maerak.files import atomic_write_json, read_input_bytes, rel_path
from maerak.machine import git_state
from maerak.profiles import ROOT, SPLITS, Profile, probs_path
from maerak.schema import decode_json, show_value
from maerak.typed import convert

SCHEMA = 1
PACKAGES = ("torch", "transformers", "peft", "axolotl", "bitsandbytes", "accelerate", "datasets", "tokenizers",
            "safetensors", "deepspeed", "flash-attn")
DEEPSPEED_DIR = "axolotl_configs/deepspeed"
# Groups, in the order verify prints them.
GROUPS = ("inputs", "base_model", "configs", "prepared", "checkpoint", "outputs")


def file_entry(profile: Profile, group: str, path: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"group": group, "path": rel_path(path, profile.root)}
    if path.is_file():
        entry["sha256"] = fp.file_sha256(path)
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
    for rel, digest in fp.tree(path, hidden=True).items():  # hidden files too: a loader may read them
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


def submission_compare(profile: Profile) -> str:
    """How verify compares a re-run submission: bytes on the CPU float32 profile (scoring is
    bit-deterministic there), predicted labels on GPU profiles (bf16 kernels are not)."""
    gpu = profile.config.needs_gpu or scoring_dtype(profile).dtype != "float32"
    return "labels" if gpu else "bytes"


def scoring_dtype(profile: Profile):
    """The dtype scoring ran in: the profile's, or what `auto` chose on this CPU (maerak/cpu_dtype.py)."""
    from maerak import cpu_dtype

    return cpu_dtype.profile_choices(profile, log=lambda _: None)["score"]


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
    # What the checkpoint produced, and everything a judge reads of it: the predictions with their
    # probabilities, and the evaluation (metrics.json, report.md, plots: every file, so one added shows).
    for predictions in (profile.submission, profile.dev_predictions):
        files.append(file_entry(profile, "outputs", predictions))
        files.append(file_entry(profile, "outputs", probs_path(predictions)))
    files += tree_entries(profile, "outputs", profile.eval_dir)
    return files


def base_model_record(profile: Profile) -> dict[str, Any]:
    """The base model: a local folder is hashed file by file (group base_model); a hub id is
    recorded with the revision its YAML pins (`revision_of_model`) and the commit the local hub
    cache resolved at download time, with the content digest of that snapshot, so a changed
    revision shows in the manifest and in verify."""
    record: dict[str, Any] = {"name": profile.base_model_name, "local": profile.base_model_is_local}
    if not profile.base_model_is_local:
        record.update(hub_snapshot(profile.base_model, profile.stage_config(1).get("revision_of_model")))
    return record


def hub_snapshot(repo: str, revision: str | None) -> dict[str, Any]:
    """{revision, commit, sha256} of a hub model in the local cache (no network: the cache only)."""
    out: dict[str, Any] = {"revision": revision, "commit": None, "sha256": None}
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, "config.json", revision=revision or "main")
    except (ImportError, ValueError):
        found = None
    if isinstance(found, str):
        snapshot = Path(found).parent
        out["commit"] = snapshot.name
        out["sha256"] = fp.model_digest(snapshot)
    return out


def evaluate_record(profile: Profile) -> dict[str, str]:
    """What verify recomputes the claimed dev accuracy from: predictions and gold, and the two
    files that claim it."""
    return {"predictions": rel_path(profile.dev_predictions, profile.root),
            "gold": rel_path(profile.split_file("dev"), profile.root),
            "metrics": rel_path(profile.eval_dir / "metrics.json", profile.root),
            "report": rel_path(profile.eval_dir / "report.md", profile.root)}


def build_manifest(profile: Profile, extra: dict | None = None) -> dict:
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "profile": profile.name,
        "seed": profile.seed,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git": git_state(profile.root),
        "packages": package_versions(),
        "environment": fp.environment(profile.root),
        "base_model": base_model_record(profile),
        "submit": {
            "checkpoint": rel_path(profile.final_dir, profile.root),
            "input": rel_path(profile.split_file("test"), profile.root),
            "submission": rel_path(profile.submission, profile.root),
            "compare": submission_compare(profile),
            "scoring": profile.scoring,
        },
        "evaluate": evaluate_record(profile),
        "files": collect_files(profile),
    }
    from dataclasses import asdict

    from maerak import cpu_dtype

    # What each stage and scoring computed in, and why (pinned, or measured/cached by `dtype: auto`).
    manifest["dtypes"] = {name: asdict(c) for name, c in cpu_dtype.profile_choices(profile, log=lambda _: None).items()}
    if extra:
        manifest.update(extra)
    return manifest


def write_manifest(profile: Profile, extra: dict | None = None) -> Path:
    return atomic_write_json(profile.manifest, build_manifest(profile, extra))


def read_manifest(path: Path) -> dict[str, Any]:
    """A manifest file, checked where verify reads it: each field verify uses has its type, else a
    ConfigError of one line naming the file and the field (`manifest.json: files[3].path: missing
    (required)`). A torn, truncated or hand-edited manifest is refused, not a traceback. Keys this
    check does not name are kept as they are (the manifest grows)."""
    try:
        data = decode_json(read_input_bytes(path), str(path))
    except InputFileError as exc:
        raise ConfigError(f"{path}: {exc.reason}") from None
    except DataError as exc:  # not JSON, not UTF-8, NaN ...: the decoder's one line
        raise ConfigError(f"{path}: {exc.problems[0].message}") from None
    return check_manifest(data, path)


def check_manifest(data: Any, file: object) -> dict[str, Any]:
    """The fields verify reads, each checked with maerak.typed's converters (same messages as the configs)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: (top level): expected a JSON object (a manifest), got {show_value(data)}")
    for key, tp in (("profile", str | None), ("packages", dict[str, Any] | None), ("submit", dict[str, Any] | None)):
        if key in data:
            convert(tp, data[key], file, key)
    for key in ("checkpoint", "input", "submission"):
        if isinstance(data.get("submit"), dict) and data["submit"]:
            if key not in data["submit"]:
                raise ConfigError(f"{file}: submit.{key}: missing (required)")
            convert(str, data["submit"][key], file, f"submit.{key}")
    files = convert(tuple[dict[str, Any], ...], data.get("files", []), file, "files")
    for n, entry in enumerate(files):
        where = f"files[{n}]"
        for key, tp in (("path", str), ("sha256", str | None), ("tree", str | None)):
            if key in entry:
                convert(tp, entry[key], file, f"{where}.{key}")
            elif key == "path":
                raise ConfigError(f"{file}: {where}.path: missing (required)")
    return data
