"""`./run.sh <verb> [args]`: one entry point for the container and the Makefile.

VERBS is the one table of the user's verbs: `./run.sh --help` prints it, the Makefile makes a
target of each (`make help`), and `reproduce` runs its steps through it. Each verb is a module
with `main(argv) -> int` plus fixed arguments; modules are imported only when their verb runs,
so `validate` does not pay for importing torch. Standard library only: the Makefile reads
this table before any environment exists.
"""
from __future__ import annotations

import errno
import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Verb:
    module: str
    help: str
    args: tuple[str, ...] = ()  # fixed arguments put before the user's


VERBS: dict[str, Verb] = {
    "model": Verb("training.embed_model", "build the embedded default model (gemma-3-270m) under models/, offline"),
    "validate": Verb("preprocessing.validate", "check official-format JSON files; print counts or FILE: ID: FIELD: problem"),
    "prepare": Verb("preprocessing.prepare", "clean, dedup, format and augment data into stage-1/stage-2 training files"),
    "train": Verb("training.axolotl_run", "run an Axolotl stage: train --stage 1|2|3 (stage 1 also merges the LoRA)"),
    "train-stage1": Verb("training.axolotl_run", "Axolotl stage 1 (QLoRA), then the merge", ("--stage", "1")),
    "merge": Verb("training.axolotl_run", "merge the stage-1 LoRA into its base (Axolotl merge-lora)", ("--merge-only",)),
    "train-stage2": Verb("training.axolotl_run", "Axolotl stage 2, full fine-tune of the merged model (--gpus N)",
                         ("--stage", "2")),
    "train-stage3": Verb("training.axolotl_run", "Axolotl stage 3, ORPO on the stage-2 model (profiles with preference: true)",
                         ("--stage", "3")),
    "submit": Verb("inference.submit", "score test items with a checkpoint and write the submission JSON"),
    "evaluate": Verb("inference.evaluate", "accuracy overall and per category, with a report"),
    "check-submission": Verb("inference.check_submission", "check a submission file against the test file"),
    "reproduce": Verb("pipeline.reproduce", "the whole pipeline for a profile, then dev accuracy and a manifest"),
    "verify": Verb("pipeline.verify", "recompute hashes, re-run submit and compare with the manifest"),
    "preflight": Verb("pipeline.preflight", "the competition configs end to end on a CPU with a tiny model, in minutes"),
}


# a full disk, a quota, a read-only mount, permissions: the user's to fix, said in one line
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def run_verb(verb: str, argv: list[str], verbs: dict[str, Verb] = VERBS) -> int:
    """Runs one verb in this process: its module's main with the verb's fixed arguments first."""
    from maerak.errors import MaerakError

    spec = verbs[verb]
    try:
        return int(importlib.import_module(spec.module).main([*spec.args, *argv]) or 0)
    except MaerakError as exc:  # one line per problem (a DataError carries several)
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"{verb}: {line}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise  # anything else is a bug to see in full
        from maerak.files import write_failure

        print(f"{verb}: {write_failure(exc.filename or '?', exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # no traceback: outputs land whole at the end of a step (write_together), so there is nothing to clean up
        print(f"{verb}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


def usage() -> str:
    width = max(map(len, VERBS))
    lines = ["usage: ./run.sh <verb> [args]   (./run.sh <verb> --help for a verb's options)", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {spec.help}" for verb, spec in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--names":  # for the Makefile: one target per verb
        print(" ".join(VERBS))
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run_verb(verb, rest)


if __name__ == "__main__":
    sys.exit(main())
