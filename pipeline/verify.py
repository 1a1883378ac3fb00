"""`./run.sh verify [--profile P] [--manifest FILE]`: check a run against its manifest.

1. Recompute the sha256 of every file the manifest lists (data, base model,
   configs, prepared data, the final checkpoint (stage 2, or stage 3 with preference: true), the submission, dev
   predictions, their probabilities, eval/) and compare. Files added to a hashed folder (the
   checkpoint, eval/), hidden ones too, fail too.
2. Re-run submit from the recorded checkpoint on the recorded test file into a
   temporary folder and compare it with the recorded submission: byte for byte
   on CPU float32 profiles; on GPU (bf16) profiles the predicted label of every
   item, since bf16 GPU kernels are not bit-deterministic (the table says which).
3. Recompute the dev accuracy from the dev predictions and the dev gold, and compare it with what
   eval/metrics.json and eval/report.md claim.
4. Print a table (item, expected, actual, status); exit 1 on any mismatch.
Package versions that differ are shown for information and do not fail.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maerak.errors import MaerakError
from maerak.fingerprint import file_sha256
from maerak.manifest import read_manifest
from maerak.profiles import Profile, probs_path, resolve_profile

SubmitFn = Callable[[list[str]], int]
OK, MISMATCH, INFO = "OK", "MISMATCH", "info"


def _short(digest: str | None) -> str:
    return "(missing)" if digest is None else digest[:16]


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, item: str, expected: str, actual: str, status: str) -> None:
        self.rows.append((item, expected, actual, status))

    @property
    def failed(self) -> list[tuple[str, str, str, str]]:
        return [r for r in self.rows if r[3].startswith(MISMATCH)]

    def render(self) -> str:
        head = ("item", "expected", "actual", "status")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(4)]
        line = "  ".join("-" * w for w in widths)
        fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        return "\n".join([fmt(head), line, *map(fmt, self.rows)])


def check_files(profile: Profile, manifest: dict, table: Table) -> None:
    trees: dict[str, set[str]] = {}
    for entry in manifest.get("files", []):
        rel, expected = entry["path"], entry.get("sha256")
        path = Path(rel) if Path(rel).is_absolute() else profile.root / rel
        if entry.get("tree"):
            trees.setdefault(entry["tree"], set())
            if expected is not None:
                trees[entry["tree"]].add(rel)
        actual = file_sha256(path) if path.is_file() else None
        if expected is None and actual is None:
            table.add(rel, "(missing)", "(missing)", f"{OK} (absent, as recorded)")
        elif expected is None:
            table.add(rel, "(missing)", _short(actual), f"{MISMATCH}: recorded as missing, now present")
        elif actual is None:
            table.add(rel, _short(expected), "(missing)", f"{MISMATCH}: file missing")
        elif actual != expected:
            table.add(rel, _short(expected), _short(actual), f"{MISMATCH}: sha256 differs")
        else:
            table.add(rel, _short(expected), _short(actual), OK)
    # A file added to a hashed folder (e.g. a second weights shard) changes the checkpoint too.
    for tree, recorded in trees.items():
        folder = Path(tree) if Path(tree).is_absolute() else profile.root / tree
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file():  # hidden files too: a judge's loader may read them
                rel = f"{tree}/{path.relative_to(folder).as_posix()}"
                if rel not in recorded:
                    table.add(rel, "(not recorded)", _short(file_sha256(path)), f"{MISMATCH}: file not in the manifest")


def _labels(path: Path) -> dict[str, str]:
    return {str(item["id"]): item.get("output", "") for item in json.loads(path.read_text(encoding="utf-8-sig"))}


def default_submit(argv: list[str]) -> int:
    from inference.submit import main as submit_main

    return int(submit_main(argv) or 0)


def rerun_submit(profile: Profile, manifest: dict, table: Table, submit: SubmitFn, compare: str) -> None:
    rec = manifest.get("submit") or {}
    item = "re-run submit"
    if not rec:
        table.add(item, "-", "-", f"{MISMATCH}: the manifest has no submit record")
        return
    resolve = lambda rel: Path(rel) if Path(rel).is_absolute() else profile.root / rel  # noqa: E731
    checkpoint, test, recorded = resolve(rec["checkpoint"]), resolve(rec["input"]), resolve(rec["submission"])
    expected_sha = next((f.get("sha256") for f in manifest.get("files", []) if f["path"] == rec["submission"]), None)
    mode = rec.get("compare", "bytes") if compare == "auto" else compare
    if not checkpoint.is_dir():
        table.add(f"{item} ({mode})", _short(expected_sha), "(no checkpoint)", f"{MISMATCH}: {rec['checkpoint']} missing")
        return
    with tempfile.TemporaryDirectory(prefix="maerak-verify-") as tmp:
        out = Path(tmp) / "submission.json"
        argv = ["--profile", profile.name, "--model", str(checkpoint), "--input", str(test),
                "--output", str(out), "--no-cache", "--quiet"]
        recorded_dtype = ((manifest.get("dtypes") or {}).get("score") or {}).get("dtype")
        if profile.config.scoring.dtype == "auto" and recorded_dtype in ("float32", "bfloat16"):
            argv += ["--dtype", recorded_dtype]  # the dtype the run scored in, whatever `auto` would choose on this CPU
        print(f"verify: re-running submit {' '.join(argv)}", flush=True)
        try:
            rc = submit(argv)
        except SystemExit as exc:  # argparse exits
            rc = exc.code if isinstance(exc.code, int) else 1
        except MaerakError as exc:  # a config or data error: its line, and the mismatch below
            print(f"verify: submit: {exc}", file=sys.stderr)
            rc = 1
        if rc != 0 or not out.is_file():
            table.add(f"{item} ({mode})", _short(expected_sha), "(no output)", f"{MISMATCH}: submit exited {rc}")
            return
        actual_sha = file_sha256(out)
        if mode == "bytes":
            same = actual_sha == expected_sha
            if same and recorded.is_file():
                same = out.read_bytes() == recorded.read_bytes()
            status = OK + " (byte-identical)" if same else f"{MISMATCH}: bytes differ from the recorded submission"
            table.add(f"{item} (bytes)", _short(expected_sha), _short(actual_sha), status)
            return
        # labels: GPU bf16 scoring may move probabilities in the last bits; the answers must not move.
        if not recorded.is_file():
            table.add(f"{item} (labels)", _short(expected_sha), _short(actual_sha),
                      f"{MISMATCH}: recorded submission missing, labels cannot be compared")
            return
        want, got = _labels(recorded), _labels(out)
        diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        status = (OK + " (same label for every item; bf16 GPU scores are not bit-deterministic)" if not diff
                  else f"{MISMATCH}: {len(diff)} of {len(want)} labels differ (first: {', '.join(diff[:3])})")
        table.add(f"{item} (labels)", f"{len(want)} labels", f"{len(want) - len(diff)} same", status)


def check_base_model(profile: Profile, manifest: dict, table: Table) -> None:
    """A hub base model: the snapshot in the local cache must be the recorded commit and content."""
    rec = manifest.get("base_model") or {}
    if rec.get("local", True) or not rec.get("commit"):
        return
    from maerak.manifest import hub_snapshot

    now = hub_snapshot(rec["name"], rec.get("revision"))
    for key in ("commit", "sha256"):
        status = OK if now[key] == rec[key] else f"{MISMATCH}: the hub model's {key} differs"
        table.add(f"base model {rec['name']} {key}", _short(rec[key]), _short(now[key]), status)


def check_dev_accuracy(profile: Profile, manifest: dict, table: Table) -> None:
    """Recompute the dev accuracy from the dev predictions and the dev gold (as evaluate does) and
    compare it with what eval/metrics.json and eval/report.md claim; the probabilities file must
    predict what the predictions file says. A forged claim fails here even with the hashes redone."""
    from inference.evaluate import _fmt, compute_metrics, read_predictions, read_probs
    from maerak.schema import load_items

    item = "dev accuracy (recomputed)"
    rec = manifest.get("evaluate")
    if not rec:
        table.add(item, "-", "-", f"{MISMATCH}: the manifest has no evaluate record")
        return
    resolve = lambda rel: Path(rel) if Path(rel).is_absolute() else profile.root / rel  # noqa: E731
    metrics_path, report_path = resolve(rec["metrics"]), resolve(rec["report"])
    recorded = next((f for f in manifest.get("files", []) if f["path"] == rec["metrics"]), None)
    if not metrics_path.is_file():
        absent = recorded is None or recorded.get("sha256") is None
        table.add(item, "(no metrics.json)", "-", f"{OK} (no dev evaluation recorded)" if absent
                  else f"{MISMATCH}: {rec['metrics']} missing")
        return
    try:
        predictions = resolve(rec["predictions"])
        pred, probs = read_predictions(predictions), read_probs(predictions)
        got = compute_metrics(pred, load_items(resolve(rec["gold"]), require_labels=True)[0], probs)
        claimed = json.loads(metrics_path.read_text(encoding="utf-8"))
        report = report_path.read_text(encoding="utf-8") if report_path.is_file() else ""
        probs_rows = json.loads(probs_path(predictions).read_text(encoding="utf-8"))["items"] if probs else []
    except (MaerakError, OSError, ValueError, KeyError, TypeError) as exc:
        table.add(item, "-", "-", f"{MISMATCH}: cannot recompute: {' '.join(str(exc).split())[:200]}")
        return
    want = f"{_fmt(claimed.get('accuracy'))} ({claimed.get('correct')}/{claimed.get('n')})"
    have = f"{_fmt(got['accuracy'])} ({got['correct']}/{got['n']})"
    line = f"**Accuracy: {_fmt(got['accuracy'])}** ({got['correct']}/{got['n']})"  # as evaluate's report has it
    off = [r["id"] for r in probs_rows if r.get("prediction") != pred.get(r.get("id"))]
    if (claimed.get("correct"), claimed.get("n"), claimed.get("accuracy")) != (got["correct"], got["n"], got["accuracy"]):
        table.add(item, want, have, f"{MISMATCH}: {rec['metrics']} claims another accuracy than its predictions give")
    elif line not in report:
        table.add(item, have, "(not in report)", f"{MISMATCH}: {rec['report']} does not state {line!r}")
    elif off:
        table.add(item, have, f"{len(off)} differ", f"{MISMATCH}: the probabilities file predicts otherwise for "
                  f"{', '.join(off[:3])}")
    else:
        table.add(item, want, have, f"{OK} (from {rec['predictions']} and {rec['gold']})")


def check_packages(manifest: dict, table: Table) -> None:
    from maerak.manifest import package_versions

    now = package_versions()
    for name, version in (manifest.get("packages") or {}).items():
        if now.get(name) != version:
            table.add(f"package {name}", str(version), str(now.get(name)), f"{INFO}: differs (not a failure)")


def verify(profile: Profile, manifest_path: Path, submit: SubmitFn | None = None,
           compare: str = "auto", rerun: bool = True) -> tuple[int, Table]:
    table = Table()
    if not manifest_path.is_file():
        table.add(str(manifest_path), "manifest", "(missing)", f"{MISMATCH}: no manifest (run `./run.sh reproduce`)")
        return 1, table
    manifest: dict[str, Any] = read_manifest(manifest_path)  # a broken manifest: one ConfigError line
    if manifest.get("profile") not in (None, profile.name):
        table.add("profile", str(manifest.get("profile")), profile.name, f"{MISMATCH}: manifest is for another profile")
    check_files(profile, manifest, table)
    check_base_model(profile, manifest, table)
    check_dev_accuracy(profile, manifest, table)
    if rerun:
        rerun_submit(profile, manifest, table, submit or default_submit, compare)
    check_packages(manifest, table)
    return (1 if table.failed else 0), table


def main(argv: list[str] | None = None, *, submit: SubmitFn | None = None, profile: Profile | None = None) -> int:
    p = argparse.ArgumentParser(prog="./run.sh verify", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", help="profile in profiles.yml (default: the manifest's, else auto)")
    p.add_argument("--manifest", type=Path, help="manifest file (default: outputs/<profile>/manifest.json)")
    p.add_argument("--compare", choices=("auto", "bytes", "labels"), default="auto",
                   help="how to compare the re-run submission (default: as recorded: bytes on CPU, labels on GPU)")
    p.add_argument("--no-rerun", action="store_true", help="hashes only; do not re-run submit")
    args = p.parse_args(argv)
    if profile is None:
        name = args.profile
        if name is None and args.manifest is not None and args.manifest.is_file():
            name = read_manifest(args.manifest).get("profile")
        profile, _ = resolve_profile(name)
    profile.apply_env()
    manifest_path = args.manifest or profile.manifest
    rc, table = verify(profile, manifest_path, submit=submit, compare=args.compare, rerun=not args.no_rerun)
    print(f"verify: profile '{profile.name}', manifest {manifest_path}")
    print(table.render())
    failed = table.failed
    if failed:
        print(f"\nverify: FAILED — {len(failed)} mismatch(es):", file=sys.stderr)
        for item, expected, actual, status in failed:
            print(f"  {item}: {status} (expected {expected}, actual {actual})", file=sys.stderr)
    else:
        checked = sum(1 for r in table.rows if r[3].startswith(OK))
        print(f"\nverify: OK — {checked} checks match the manifest")
    return rc


if __name__ == "__main__":
    sys.exit(main())
