"""Hostile and unlucky input against every verb that takes a file.

The corpus is generated here (the 50 MB file goes to tmp_path, nothing big is
committed). Each case must end with a non-zero exit, one `FILE: ID: FIELD:
problem` line naming the file (and the item and field where there is one), and
no file written anywhere under tmp_path.
"""
from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path

import pytest

from inference import check_submission, evaluate, submit
from maerak.files import atomic_write_json, atomic_write_text
from maerak.schema import MAX_TEXT_CHARS, DataError, load_items, show_name
from preprocessing import config, prepare, validate

ROOT = Path(__file__).resolve().parent.parent


def sample_items(sample_dir: Path, split: str = "dev") -> list[dict]:
    return json.loads((sample_dir / f"{split}.json").read_text(encoding="utf-8"))


# (case name, bytes or None for "no such file" / "a directory", item id, field) -------------------
def file_cases(sample_dir: Path) -> list[tuple[str, bytes | str, str, str]]:
    good = (sample_dir / "dev.json").read_bytes()
    text = good.decode("utf-8")
    return [
        ("missing", "missing", "-", "file"),
        ("directory", "directory", "-", "file"),
        ("empty", b"", "-", "file"),
        ("whitespace", b" \n\t\n", "-", "file"),
        ("bom-only", b"\xef\xbb\xbf", "-", "file"),
        ("not-utf8", good.replace(b'"utterance": "', b'"utterance": "\xb4\xeb', 1), "-", "file"),
        ("utf16-bom", text.encode("utf-16"), "-", "file"),
        ("utf16-no-bom", text.encode("utf-16-le"), "-", "file"),
        ("truncated", good[: len(good) // 2], "-", "file"),
        ("deep-nesting", b"[" * 100_000 + b"]" * 100_000, "-", "file"),
        ("deep-but-parsable", b"[" * 200 + b"]" * 200, "-", "file"),
        ("nan", b"[NaN]", "-", "file"),
        ("infinity", b'[{"id": "x", "n": -Infinity}]', "-", "file"),
        ("huge-number", b"[1e999]", "-", "file"),
        ("lone-surrogate", b'[{"id": "\\ud800"}]', "-", "file"),
        ("not-a-list", b'{"id": "x"}', "-", "file"),
        ("binary", bytes(range(256)) * 4, "-", "file"),
    ]


# (field path, bad value): a wrong type in every field of an item --------------------------------
WRONG_TYPES = [
    ("id", ["a"]), ("id", 7), ("id", None),
    ("input", "text"), ("input", None),
    ("input.conversation", {}), ("input.conversation", "text"), ("input.conversation", []),
    ("input.conversation[0]", "hello"),
    ("input.conversation[0].speaker", []), ("input.conversation[0].speaker", True), ("input.conversation[0].speaker", "A"),
    ("input.conversation[0].utterance", {"t": 1}), ("input.conversation[0].utterance", ["a"]),
    ("input.conversation[0].utterance", True), ("input.conversation[0].utterance", "가" * (MAX_TEXT_CHARS + 1)),
    ("input.conversation[0].utterance_id", {"a": 1}), ("input.conversation[0].utterance_id", [["x"]]),
    ("input.reference_id", {"a": 1}), ("input.reference_id", [{"a": 1}]), ("input.reference_id", 3.5),
    ("input.category", ["원인"]), ("input.category", 1),
    ("input.inference_1", 1), ("input.inference_2", None), ("input.inference_3", ["x"]), ("input.inference_1", "가" * (MAX_TEXT_CHARS + 1)),
    ("output", ["inference_1"]), ("output", True), ("output", "inference_4"),
]


def set_field(item: dict, path: str, value) -> None:
    """Put `value` at a dotted path like input.conversation[0].speaker."""
    parts = path.replace("[", ".[").split(".")
    target = item
    for part in parts[:-1]:
        target = target[int(part[1:-1])] if part.startswith("[") else target[part]
    last = parts[-1]
    if last.startswith("["):
        target[int(last[1:-1])] = value
    else:
        target[last] = value


def make_file(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / "in" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    if content == "directory":
        path.mkdir()
    elif content != "missing":
        path.write_bytes(content)
    return path


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def one_problem_line(out: str, path: Path, item_id: str, field: str) -> None:
    """Exactly one `FILE: ID: FIELD: problem` line, naming this file, item and field."""
    head = f"{show_name(str(path))}: {show_name(item_id)}: {field}: "
    lines = [ln.strip() for ln in out.splitlines() if ln.strip().startswith(show_name(str(path)) + ": ")]
    problem_lines = [ln for ln in lines if not ln.endswith("problem(s))") and "INVALID" not in ln]
    assert len(problem_lines) == 1, out
    assert problem_lines[0].startswith(head), (head, out)
    assert "Traceback" not in out


@pytest.fixture(scope="module")
def verbs(tiny_model_dir):
    """Each verb that takes a file, as f(tmp_path, bad_path) -> exit status, run in-process."""
    sample = ROOT / "data" / "sample"
    return {
        "validate": lambda t, p: validate.main([str(p)]),
        "submit --input": lambda t, p: submit.main(["--profile", "sample", "--model", str(tiny_model_dir), "--input", str(p),
                                                    "--output", str(t / "out" / "sub.json"), "--quiet"]),
        "check-submission --submission": lambda t, p: check_submission.main(["--submission", str(p), "--test", str(p.parent / "dev.json")]),
        "check-submission --test": lambda t, p: check_submission.main(["--submission", str(p.parent / "dev.json"), "--test", str(p)]),
        "evaluate --gold": lambda t, p: evaluate.main(["--profile", "sample", "--gold", str(p), "--pred", str(sample / "dev.json"),
                                                       "--out", str(t / "out" / "eval")]),
        "evaluate --pred": lambda t, p: evaluate.main(["--profile", "sample", "--gold", str(sample / "dev.json"), "--pred", str(p),
                                                       "--out", str(t / "out" / "eval")]),
    }


def run_case(verbs, verb, tmp_path, path, capsys):
    (path.parent / "dev.json").write_bytes((ROOT / "data" / "sample" / "dev.json").read_bytes())
    before = snapshot(tmp_path)
    code = verbs[verb](tmp_path, path)
    captured = capsys.readouterr()
    assert code != 0, captured
    assert snapshot(tmp_path) == before, "a failed run wrote a file"
    return captured.out + captured.err


VERBS = ["validate", "submit --input", "check-submission --submission", "check-submission --test", "evaluate --gold", "evaluate --pred"]


@pytest.mark.parametrize("verb", VERBS)
def test_file_level_corpus(verbs, verb, sample_dir, tmp_path, capsys):
    for name, content, item_id, field in file_cases(sample_dir):
        path = make_file(tmp_path, name, content)
        out = run_case(verbs, verb, tmp_path, path, capsys)
        try:
            one_problem_line(out, path, item_id, field)
        except AssertionError as exc:
            raise AssertionError(f"case {name}: {exc}") from None


@pytest.mark.parametrize("verb", ["validate", "submit --input", "evaluate --gold"])
def test_wrong_type_in_every_field(verbs, verb, sample_dir, tmp_path, capsys):
    for n, (field, value) in enumerate(WRONG_TYPES):
        items = sample_items(sample_dir)
        set_field(items[3], field, value)
        iid = items[3]["id"] if isinstance(items[3]["id"], str) else "<item #3>"
        path = make_file(tmp_path, f"wrong-{n}", json.dumps(items, ensure_ascii=False).encode())
        out = run_case(verbs, verb, tmp_path, path, capsys)
        try:
            one_problem_line(out, path, iid, field)
        except AssertionError as exc:
            raise AssertionError(f"{field}={value!r:.40}: {exc}") from None


def test_an_item_that_is_not_an_object(verbs, sample_dir, tmp_path, capsys):
    items = sample_items(sample_dir)
    items[2] = ["not", "an", "item"]
    path = make_file(tmp_path, "list-item", json.dumps(items, ensure_ascii=False).encode())
    for verb in ("validate", "submit --input"):
        one_problem_line(run_case(verbs, verb, tmp_path, path, capsys), path, "<item #2>", "item")


def test_a_50_mb_file_with_one_bad_item(verbs, sample_dir, tmp_path, capsys):
    base = sample_items(sample_dir, "train")
    items, size, n = [], 0, 0
    while size < 50_000_000:
        item = copy.deepcopy(base[n % len(base)])
        item["id"] = f"big-{n}"
        item["input"]["conversation"][0]["utterance"] = "긴 발화 " * 200
        items.append(item)
        size += len(json.dumps(item, ensure_ascii=False).encode())
        n += 1
    items[len(items) // 2]["input"]["category"] = "원인?"
    path = make_file(tmp_path, "big", json.dumps(items, ensure_ascii=False).encode())
    assert path.stat().st_size >= 50_000_000
    for verb in ("validate", "submit --input"):
        one_problem_line(run_case(verbs, verb, tmp_path, path, capsys), path, f"big-{len(items) // 2}", "input.category")


def test_an_id_with_a_newline_stays_on_one_line(verbs, sample_dir, tmp_path, capsys):
    items = sample_items(sample_dir)
    items[1]["id"] = "evil\nid: x: y"
    items[1]["input"]["category"] = "?"
    path = make_file(tmp_path, "newline-id", json.dumps(items, ensure_ascii=False).encode())
    out = run_case(verbs, "validate", tmp_path, path, capsys)
    assert f'{path}: "evil\\nid: x: y": input.category: unknown category' in out


def test_prepare_refuses_a_hostile_train_file(sample_dir, tmp_path, monkeypatch, capsys):
    from maerak.profiles import Profile

    data = tmp_path / "data"
    data.mkdir()
    for split in ("dev", "test"):
        (data / f"{split}.json").write_bytes((sample_dir / f"{split}.json").read_bytes())
    profile = Profile(name="t", settings={"data_dir": "data",
                                         "sources": str(ROOT / "preprocessing" / "sources.yml")}, root=tmp_path)
    cfg = config.load_config(profile)
    monkeypatch.setattr(prepare, "resolve_profile", lambda name: (profile, "test"))
    monkeypatch.setattr(prepare, "load_config", lambda p, path=None: cfg)
    for name, content, _id, _field in file_cases(sample_dir):
        train = data / "train.json"
        if train.is_dir():
            train.rmdir()
        elif train.exists():
            train.unlink()
        if content == "directory":
            train.mkdir()
        elif content != "missing":
            train.write_bytes(content)
        before = snapshot(tmp_path)
        assert prepare.main(["--profile", "t", "--quiet"]) != 0, name
        out = capsys.readouterr()
        assert snapshot(tmp_path) == before, name
        lines = [ln for ln in (out.out + out.err).splitlines() if "train.json: -: file: " in ln]
        assert len(lines) == 1 and "Traceback" not in out.err, (name, out)


# ---------------------------------------------------------------- the five defects, one test each
def test_submit_refuses_to_overwrite_its_input_before_scoring(tiny_model_dir, sample_dir, tmp_path, capsys, monkeypatch):
    dev = tmp_path / "d.json"
    dev.write_bytes((sample_dir / "dev.json").read_bytes())
    scored = []
    monkeypatch.setattr(submit, "make_scorer", lambda *a, **k: scored.append(1))
    for output in (dev, tmp_path / "." / "d.json", tmp_path / "link.json"):
        if output.name == "link.json":
            output.symlink_to(dev)
        assert submit.main(["--profile", "sample", "--model", str(tiny_model_dir), "--input", str(dev),
                            "--output", str(output), "--quiet"]) == 1
        assert "is the input file" in capsys.readouterr().err
    assert not scored and dev.read_bytes() == (sample_dir / "dev.json").read_bytes()


def test_directory_outputs_are_refused_before_scoring(tiny_model_dir, sample_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(submit, "make_scorer", lambda *a, **k: pytest.fail("scored before checking the output"))
    (tmp_path / "outdir").mkdir()
    (tmp_path / "afile").write_text("x")
    for output in (tmp_path / "outdir", tmp_path / "afile" / "sub.json"):
        assert submit.main(["--profile", "sample", "--model", str(tiny_model_dir), "--input", str(sample_dir / "test.json"),
                            "--output", str(output), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {output}: ") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "outdir"] and not any((tmp_path / "outdir").iterdir())


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing-shard"])
def test_corrupt_weights_are_named_with_advice(tiny_model_copy, sample_dir, tmp_path, capsys, damage):
    weights = tiny_model_copy / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        weights.write_bytes(b"not weights" * 100)
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        (tiny_model_copy / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    code = submit.main(["--profile", "sample", "--model", str(tiny_model_copy), "--input", str(sample_dir / "test.json"),
                        "--output", str(tmp_path / "s.json"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and not (tmp_path / "s.json").exists()
    named = "model-00001-of-00002.safetensors" if damage == "missing-shard" else "model.safetensors"
    assert f"{tiny_model_copy / named}: " in err and "train it again" in err


def test_written_files_get_the_umask_mode_and_replaced_files_keep_theirs(tmp_path):
    old = os.umask(0o022)
    try:
        new = atomic_write_json(tmp_path / "new.json", [1])
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write_text(kept, "new")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "new"
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "private.txt", "x").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_weaker_cases(sample_dir, tmp_path, capsys):
    items = sample_items(sample_dir)
    for n, speaker in enumerate((0, -1, 3)):
        items[n]["input"]["conversation"][0]["speaker"] = speaker
    path = tmp_path / "speakers.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError) as exc:  # an error since issue 29: the task has speakers 1 and 2 only
        load_items(path)
    assert [(p.item_id, p.field) for p in exc.value.problems] == [
        (items[n]["id"], "input.conversation[0].speaker") for n in range(3)]
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    assert validate.main([str(empty)]) == 1
    assert f"{empty}: -: file: empty file" in capsys.readouterr().err


def test_files_a_source_folder_does_not_read_are_reported(tmp_path, sample_dir):
    from maerak.profiles import Profile

    (tmp_path / "data").mkdir()
    for split in ("train", "dev", "test"):
        (tmp_path / "data" / f"{split}.json").write_bytes((sample_dir / f"{split}.json").read_bytes())
    corr = tmp_path / "data" / "external" / "correction"
    corr.mkdir(parents=True)
    (corr / "pairs.json").write_text('[{"source": "a", "corrected": "b"}]', encoding="utf-8")
    (corr / "notes.txt").write_text("hello", encoding="utf-8")
    profile = Profile(name="t", settings={"data_dir": "data",
                                         "sources": str(ROOT / "preprocessing" / "sources.yml")}, root=tmp_path)
    cfg = config.load_config(profile)
    prepare.run(profile, cfg, progress=False)
    report = (profile.prepared / "report.md").read_text(encoding="utf-8")
    for name in ("pairs.json", "notes.txt"):
        assert f"{corr / name}: not read: source 'correction' reads only *.jsonl, *.csv" in report
