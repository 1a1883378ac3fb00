"""`./run.sh submit`: score items with one or more checkpoints and write the submission.

The output is the input array with `output` filled (overwritten for labeled
inputs, which is how dev predictions are made), written atomically only after
every item is scored and the in-memory result passes the submission checks.
Next to it goes `<output stem>.probs.json` (per-item option probabilities).
Scores are cached per (item, order, model, mode) in a JSONL file, so an interrupted
run resumes where it stopped. The scoring mode is the one the checkpoint was trained for
(its maerak-mode.json, maerak/modes.py); `--mode` may only repeat it.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from inference.backends import make_scorer
from inference.caching import ScoreCache
from inference.check_submission import check_submission_data
from inference.degenerate import degeneracy
from inference.ensemble import ENSEMBLE_MODES, combine, score_items
from maerak import cpu_dtype
from maerak.checkpoint import checkpoint_problems
from maerak.clean import model_view
from maerak.files import dumps_json, output_problem, same_file, write_together
from maerak.lock import output_lock
from maerak.modes import MODES, NonFiniteError, checkpoint_mode
from maerak.profiles import probs_path, resolve_profile, seed_everything
from maerak.prompt import ORDER_SETS
from maerak.schema import LABELS, DataError, decode_json, load_items, with_outputs
from maerak.typed import positive_int


def default_cache(output: Path) -> Path:
    return output.with_name(output.stem + ".cache.jsonl")


def path_problems(input_path: Path, output: Path, cache: Path | None) -> list[str]:
    """Everything wrong with where submit will write, found before any scoring: the output is
    the input (labelled dev items would lose their gold answers), or a path is not writable."""
    writes = {"--output": output, "probabilities": probs_path(output), **({"--cache": cache} if cache else {})}
    problems = [f"{path}: {what} is the input file {input_path}; write somewhere else"
                for what, path in writes.items() if same_file(path, input_path)]
    return problems + [p for path in writes.values() if (p := output_problem(path))]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="./run.sh submit", description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=None, help="profile in profiles.yml (default: auto)")
    p.add_argument("--model", nargs="+", action="extend", default=None, metavar="DIR",
                   help="checkpoint(s); several make an ensemble (default: the profile's stage-2 dir)")
    p.add_argument("--input", type=Path, default=None, help="items to score (default: the profile's test file)")
    p.add_argument("--output", type=Path, default=None, help="where to write (default: outputs/<profile>/submission.json)")
    p.add_argument("--tta", choices=tuple(ORDER_SETS), default=None, help="permutation TTA (default: profile scoring.tta)")
    p.add_argument("--mode", choices=tuple(MODES), default=None,
                   help="letters: the answer letter's log-likelihood; options: each option's (default: the mode "
                        "the checkpoint was trained for, else profile scoring.mode); a contradicting --mode is refused")
    p.add_argument("--ensemble", choices=ENSEMBLE_MODES, default="mean", help="how several models combine")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: profile scoring.batch_size")
    p.add_argument("--max-length", type=positive_int, default=None, help="tokens; default: profile scoring.max_length")
    p.add_argument("--dtype", default=None, help="auto | float32 | bfloat16 | float16 (default: profile scoring.dtype; auto: measured on this CPU, maerak/cpu_dtype.py)")
    p.add_argument("--backend", choices=("auto", "transformers", "vllm"), default="transformers",
                   help="vllm needs `import vllm` (.venv-vllm: make setup VLLM=1); auto picks it when importable")
    p.add_argument("--cache", type=Path, default=None, help="score cache JSONL (default: <output stem>.cache.jsonl)")
    p.add_argument("--no-cache", action="store_true", help="score everything afresh and keep no cache")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args: argparse.Namespace, on_batch: Callable[[int, int], None] | None = None) -> int:
    profile = resolve_profile(args.profile)[0]
    profile.apply_env()
    seed_everything(profile.seed)
    scoring = profile.scoring
    models = [Path(m) for m in (args.model or [profile.final_dir])]  # stage 3's with preference: true
    input_path = args.input or profile.split_file("test")
    output = args.output or profile.submission
    tta = args.tta or scoring.get("tta", "none")
    batch_size = args.batch_size or int(scoring["batch_size"])  # None: not given (argparse refuses 0 and below)
    max_length = args.max_length or int(scoring["max_length"])
    dtype = args.dtype or scoring.get("dtype", "float32")
    if dtype == "auto":  # one decision per CPU, cached: every scoring run on this machine uses the same dtype
        dtype = cpu_dtype.resolve("auto", profile.out / cpu_dtype.CACHE_DIR,
                                  log=(lambda _: None) if args.quiet else (lambda s: print(s, file=sys.stderr))).dtype

    cache_path = None if args.no_cache else (args.cache or default_cache(output))
    problems = path_problems(input_path, output, cache_path) + [
        p for m in models for p in checkpoint_problems(m, "train it again, or point --model at a complete checkpoint")]
    if problems:
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return 1
    mode, mode_warnings = checkpoint_mode(models, args.mode, profile.scoring_mode)
    for line in mode_warnings:
        print(line, file=sys.stderr)
    if (note := mode.tta_note(tta)) is not None:
        if not args.quiet:
            print(f"note: {note}", file=sys.stderr)
        tta = "none"
    try:
        items, warnings = load_items(input_path)
        scored_items = model_view(items)  # cleaned exactly as the training rows were
    except DataError as exc:
        print(exc, file=sys.stderr)
        return 1
    for w in warnings:
        if not args.quiet:
            print(w, file=sys.stderr)
    if not items:
        print(f"error: {input_path}: no items to score", file=sys.stderr)
        return 1

    with output_lock(output.parent, "submit"):  # one run per output folder at a time (its score cache too)
        cache = None if cache_path is None else ScoreCache(cache_path)
        per_model: list[dict[str, list[float]]] = []
        model_info = []
        for m in models:
            if not args.quiet:
                print(f"scoring {len(items)} items with {m} (mode={mode.name}, tta={tta}, dtype={dtype}, batch={batch_size})",
                      file=sys.stderr)
            kwargs = {"dtype": dtype, "batch_size": batch_size, "max_length": max_length, **profile.vllm}
            scorer = make_scorer(m, backend=args.backend, **kwargs)
            try:
                probs = score_items(scorer, scored_items, mode, tta=tta, cache=cache, on_batch=on_batch,
                                    progress=not args.quiet)
            except NonFiniteError as exc:  # a broken checkpoint: nothing is written
                print(f"{'' if args.quiet else chr(10)}error: {m}: {exc}; nothing written", file=sys.stderr)
                return 1
            if scorer.truncated:
                print(f"warning: {len(scorer.truncated)} item(s) had a prompt longer than {max_length} tokens; their oldest "
                      f"conversation turns were left out (BOS, instruction, question and options kept): "
                      f"{', '.join(scorer.truncated)}", file=sys.stderr)
            per_model.append(probs)
            model_info.append({"dir": str(m), "fingerprint": scorer.fingerprint})
            scorer.close()

        outputs: dict[str, str] = {}
        prob_rows = []
        for it in items:
            rows = [pm[it.id] for pm in per_model]
            choice, mean = combine(rows, args.ensemble)
            outputs[it.id] = LABELS[choice]
            prob_rows.append({"id": it.id, "probs": mean, "prediction": outputs[it.id],
                              **({"per_model": rows} if len(rows) > 1 else {})})

        # Each item's raw dict is the input exactly as given: only `output` changes. The check runs on the
        # bytes that will be written, decoded as a reader would, and those same bytes are written.
        submission = with_outputs(items, outputs)
        data = dumps_json(submission).encode("utf-8")
        try:
            problems = check_submission_data(decode_json(data, str(output)), [it.raw for it in items], str(output),
                                             str(input_path), data=data)
        except DataError as exc:
            problems = exc.problems
        if problems:
            print(f"refusing to write {output}:", file=sys.stderr)
            for p in problems:
                print(f"  {p}", file=sys.stderr)
            return 1
        degenerate = degeneracy([outputs[it.id] for it in items], [r["probs"] for r in prob_rows])
        for line in degenerate["warnings"]:
            print(line, file=sys.stderr)
        probs = {"models": model_info, "mode": mode.name, "tta": tta, "ensemble": args.ensemble,
                 "degenerate": degenerate, "items": prob_rows}
        # both or neither: a new probabilities file never sits beside an older submission
        write_together({probs_path(output): dumps_json(probs).encode("utf-8"), output: data}, output.parent)
        print(f"wrote {output} ({len(submission)} items; checked) and {probs_path(output)}")
        return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
