"""`./run.sh <verb> [args]`: one entry point for the container and the Makefile.

Each verb is a module with `main(argv) -> int`; modules are imported only when
their verb runs, so `validate` does not pay for importing torch.
"""
from __future__ import annotations

import importlib
import sys

VERBS: dict[str, tuple[str, str]] = {
    "validate": ("preprocessing.validate", "check official-format JSON files; print counts or FILE: ID: FIELD: problem"),
    "prepare": ("preprocessing.prepare", "clean, dedup, format and augment data into stage-1/stage-2 training files"),
    "model": ("training.embed_model", "build the embedded default model (gemma-3-270m) under models/, offline"),
    "train": ("training.axolotl_run", "run an Axolotl stage: train --stage 1|2 (stage 1 also merges the LoRA)"),
    "merge": ("training.axolotl_run", "merge the stage-1 LoRA into its base (Axolotl merge-lora)"),
    "submit": ("inference.submit", "score test items with a checkpoint and write the submission JSON"),
    "evaluate": ("inference.evaluate", "accuracy overall and per category, with a report"),
    "check-submission": ("inference.check_submission", "check a submission file against the test file"),
    "reproduce": ("pipeline.reproduce", "the whole pipeline for a profile, then dev accuracy and a manifest"),
    "verify": ("pipeline.verify", "recompute hashes, re-run submit and compare with the manifest"),
    "preflight": ("pipeline.preflight", "the competition configs end to end on a CPU with a tiny model, in minutes"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: ./run.sh <verb> [args]   (./run.sh <verb> --help for a verb's options)", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {help_}" for verb, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(VERBS[verb][0])
    if verb == "merge":
        rest = ["--merge-only", *rest]
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
