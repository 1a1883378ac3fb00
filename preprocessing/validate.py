"""`./run.sh validate [FILE...]`: check official-format files and summarise them.

Valid files: per-file counts, exit 0 (warnings, e.g. a reference id that points
at nothing, are printed but do not fail). Invalid: one line per problem as
`FILE: ITEM_ID: FIELD: problem`, exit 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maerak.profiles import SPLITS, resolve_profile
from maerak.schema import CATEGORIES, LABELS, DataError, Item, Problem, load_items


def summarize(items: list[Item]) -> dict:
    """Counts a user checks first: items, conversations, categories, label balance."""
    return {
        "items": len(items),
        "conversations": len({it.conversation_key for it in items}),
        "categories": {c: n for c in CATEGORIES if (n := sum(it.category == c for it in items))},
        "labels": {label: n for label in LABELS if (n := sum(it.label == label for it in items))},
        "unlabeled": sum(it.label is None for it in items),
    }


def format_summary(path: str, summary: dict, warnings: list[Problem]) -> str:
    cats = ", ".join(f"{c} {n}" for c, n in summary["categories"].items())
    labels = ", ".join(f"{k} {n}" for k, n in summary["labels"].items()) or "none"
    lines = [
        f"{path}: ok: {summary['items']} items, {summary['conversations']} conversations",
        f"  categories: {cats}",
        f"  labels: {labels}" + (f"; unlabeled {summary['unlabeled']}" if summary["unlabeled"] else ""),
    ]
    lines += [f"  {w}" for w in warnings]
    return "\n".join(lines)


def validate_files(paths: list[Path]) -> tuple[list[str], list[Problem]]:
    """Returns (report lines for valid files, errors for invalid ones)."""
    reports: list[str] = []
    errors: list[Problem] = []
    for path in paths:
        try:
            items, warnings = load_items(path)
        except DataError as exc:
            errors += exc.problems
            continue
        reports.append(format_summary(str(path), summarize(items), warnings))
    return reports, errors


def default_files(profile_name: str | None) -> list[Path]:
    profile = resolve_profile(profile_name)[0]
    return [profile.split_file(s) for s in SPLITS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run.sh validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="files to check (default: the profile's train/dev/test)")
    parser.add_argument("--profile", help="sample, official-cpu or competition (default: auto)")
    args = parser.parse_args(argv)
    paths = args.files or default_files(args.profile)
    reports, errors = validate_files(paths)
    for line in reports:
        print(line)
    for problem in errors:
        print(problem, file=sys.stderr)
    if errors:
        print(f"validate: {len(errors)} problem(s) in {len({p.file for p in errors})} file(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
