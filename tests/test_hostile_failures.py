"""The second hostile round (issue 29): every failure one line, a non-zero exit, nothing half-written.

Each test runs a verb the way ./run.sh does (pipeline.cli.run_verb: a MaerakError becomes one
`verb: ...` line) or calls the verb's main, and asserts the one line, the exit status and that no
file under tmp_path changed or appeared. A full disk is an ENOSPC raised while a staged output is
fsynced (a real 1 MB tmpfs gives the same lines: see the report of issue 29).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inference import check_submission, evaluate, submit
from maerak import clean
from maerak.errors import ConfigError, InputFileError
from maerak.files import load_yaml, read_input_bytes
from maerak.lock import LOCK_NAME, output_lock
from maerak.profiles import Profile, load_profiles, read_stage_yaml
from pipeline.cli import run_verb
from preprocessing import config, prepare, validate

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


def state(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for a folder): equal before and after = nothing written."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*")) if not p.is_fifo()}


def one_line(text: str, *parts: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def verb_line(err: str, verb: str, *parts: str) -> str:
    """The one `verb: ...` line among a model load's own warnings and progress bars."""
    return one_line("\n".join(ln for ln in err.splitlines() if ln.startswith(f"{verb}: ") or "Traceback" in ln), *parts)


@pytest.fixture
def no_hang():
    """A read that blocks (a FIFO) fails the test instead of hanging the suite."""
    def fail(*_):
        raise TimeoutError("blocked reading")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def data_profile(tmp_path: Path, name: str = "t") -> Profile:
    """A data-only profile in tmp_path (no stage YAMLs: prepare writes prepared/stage{1,2}.jsonl + the report)."""
    shutil.copytree(SAMPLE, tmp_path / "data", dirs_exist_ok=True)
    return Profile(name=name, settings={"data_dir": "data", "sources": str(ROOT / "preprocessing" / "sources.yml")},
                   root=tmp_path)


def use_profile(monkeypatch, profile: Profile) -> None:
    cfg = config.load_config(profile)
    monkeypatch.setattr(prepare, "resolve_profile", lambda name: (profile, "test"))
    monkeypatch.setattr(prepare, "load_config", lambda p, path=None: cfg)


def prepare_outputs(profile: Profile) -> list[Path]:
    return [profile.prepared / n for n in ("stage1.jsonl", "stage2.jsonl", "report.json", "report.md")]


def full_disk_at(monkeypatch, name: str) -> None:
    """ENOSPC when the staged copy of output `name` is flushed to disk (what a full disk does)."""
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(name):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


# ---------------------------------------------------------------- device files as input
@pytest.mark.parametrize("kind", ["/dev/zero", "fifo"])
def test_a_device_or_fifo_is_refused_by_validate_and_check_submission(kind, tmp_path, capsys, no_hang):
    path = Path("/dev/zero") if kind == "/dev/zero" else tmp_path / "f.json"
    if kind == "fifo":
        os.mkfifo(path)
    what = "a character device" if kind == "/dev/zero" else "a named pipe (FIFO)"
    before = state(tmp_path)
    for argv_main, argv in ((validate.main, [str(path)]),
                            (check_submission.main, ["--submission", str(path), "--test", str(SAMPLE / "test.json")]),
                            (check_submission.main, ["--submission", str(SAMPLE / "test.json"), "--test", str(path)])):
        assert argv_main(argv) == 1
        out = capsys.readouterr()
        problems = [ln for ln in (out.out + out.err).splitlines() if ln.startswith(f"{path}: -: file: ")]
        assert problems == [f"{path}: -: file: is {what}, not a regular file"], out
        assert "Traceback" not in out.err
    assert state(tmp_path) == before


def test_configs_are_read_through_the_same_reader(tmp_path, no_hang):
    fifo = tmp_path / "profiles.yml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as exc:
        load_yaml(fifo)
    one_line(str(exc.value), f"{fifo}: is a named pipe (FIFO), not a regular file")


def test_reads_are_capped(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b"[" + b" " * 100 + b"]")
    assert read_input_bytes(path, limit=102) == path.read_bytes()
    with pytest.raises(InputFileError) as exc:
        read_input_bytes(path, limit=101)
    one_line(str(exc.value), f"{path}: 102 bytes, over the 101 bytes cap on one input file")


# ---------------------------------------------------------------- a full disk: all or nothing
def test_prepare_on_a_full_disk_keeps_the_old_set(tmp_path, monkeypatch, capsys):
    profile = data_profile(tmp_path)
    for path in prepare_outputs(profile):  # an older complete set
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"old {path.name}\n")
    use_profile(monkeypatch, profile)
    full_disk_at(monkeypatch, "report.json")  # after both stage files were written
    before = state(tmp_path)
    assert run_verb("prepare", ["--profile", "t", "--quiet"]) == 1
    one_line(capsys.readouterr().err, "prepare: ", "report.json: cannot write: no space left on the device", "nothing written")
    assert state(tmp_path) == before


def test_submit_on_a_full_disk_writes_neither_file(tiny_model_dir, tmp_path, monkeypatch, capsys):
    output = tmp_path / "out" / "sub.json"
    output.parent.mkdir()
    output.write_text("old submission")
    (tmp_path / "out" / "sub.probs.json").write_text("old probabilities")
    full_disk_at(monkeypatch, "sub.json")  # the probabilities were staged first
    before = state(tmp_path)
    assert run_verb("submit", ["--profile", "sample", "--model", str(tiny_model_dir), "--input", str(SAMPLE / "test.json"),
                               "--output", str(output), "--no-cache", "--quiet"]) == 1
    verb_line(capsys.readouterr().err, "submit", f"submit: {output}: cannot write: no space left on the device")
    assert state(tmp_path) == before


# ---------------------------------------------------------------- unwritable outputs in prepare
@pytest.mark.parametrize("how", ["a file", "read-only"])
def test_prepare_refuses_unwritable_outputs_before_working(how, tmp_path, monkeypatch, capsys):
    profile = data_profile(tmp_path)
    use_profile(monkeypatch, profile)
    monkeypatch.setattr(prepare, "run", lambda *a, **k: pytest.fail("prepare ran before checking its outputs"))
    if how == "a file":
        profile.out.parent.mkdir(parents=True)
        profile.out.write_text("not a folder")
        says = f"{profile.out} is a file, not a directory"
    else:
        profile.prepared.mkdir(parents=True)
        real = os.statvfs
        monkeypatch.setattr(os, "statvfs", lambda p: type("V", (), {"f_flag": os.ST_RDONLY})()
                            if Path(p) == profile.prepared else real(p))
        says = f"{profile.prepared} is on a read-only file system"
    before = state(tmp_path)
    assert run_verb("prepare", ["--profile", "t", "--quiet"]) == 1
    one_line(capsys.readouterr().err, "prepare: ", says)
    assert state(tmp_path) == before


# ---------------------------------------------------------------- verify on a broken manifest
GOOD_MANIFEST = {"profile": "sample", "files": [{"group": "inputs", "path": "data/sample/test.json", "sha256": "0" * 64}],
                 "submit": {"checkpoint": "x", "input": "data/sample/test.json", "submission": "s.json"}}


@pytest.mark.parametrize("damage, says", [
    ("byte", "not UTF-8"),
    ("truncated", "not valid JSON"),
    ("list", "(top level): expected a JSON object (a manifest), got a JSON array"),
    ("no-path", "files[0].path: missing (required)"),
    ("files-text", "files: expected a list, got text"),
    ("submit-number", "submit.checkpoint: expected text"),
])
def test_verify_reads_a_broken_manifest_as_one_line(damage, says, tmp_path, capsys):
    m = tmp_path / "manifest.json"
    good = json.dumps(GOOD_MANIFEST).encode()
    data = {"byte": good.replace(b'"files"', b'"fi\xffles"'), "truncated": good[: len(good) // 2], "list": b"[]",
            "no-path": json.dumps({"files": [{"sha256": None}]}).encode(),
            "files-text": json.dumps({"files": "x"}).encode(),
            "submit-number": json.dumps({**GOOD_MANIFEST, "submit": {**GOOD_MANIFEST["submit"], "checkpoint": 3}}).encode()}[damage]
    m.write_bytes(data)
    before = state(tmp_path)
    assert run_verb("verify", ["--profile", "sample", "--manifest", str(m), "--no-rerun"]) == 1
    out = capsys.readouterr()
    one_line(out.err, f"verify: {m}: ", says)
    assert state(tmp_path) == before


# ---------------------------------------------------------------- config values
def stage_yaml(tmp_path: Path, **change) -> Path:
    cfg = yaml.safe_load((ROOT / "axolotl_configs" / "sample" / "stage1_qlora.yml").read_text(encoding="utf-8"))
    for key, value in change.items():
        if value is None:
            del cfg[key]
        else:
            cfg[key] = value
    path = tmp_path / "stage1_qlora.yml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.mark.parametrize("change, says", [
    ({"base_model": None}, "base_model: missing (required"),
    ({"learning_rate": "fast"}, "learning_rate: 'fast': expected a number"),
    ({"learning_rate": 0}, "learning_rate: 0: expected more than 0"),
    ({"micro_batch_size": -2}, "micro_batch_size: -2: expected 1 or more"),
    ({"sequence_len": -768}, "sequence_len: -768: expected 1 or more"),
    ({"gradient_accumulation_steps": 1.5}, "gradient_accumulation_steps: 1.5: expected an integer"),
    ({"lora_dropout": 2}, "lora_dropout: 2: expected at most 1"),
])
def test_stage_yaml_values_are_checked_where_read(change, says, tmp_path):
    with pytest.raises(ConfigError) as exc:
        read_stage_yaml(stage_yaml(tmp_path, **change))
    one_line(str(exc.value), f"{tmp_path / 'stage1_qlora.yml'}: {says}")


def test_a_yaml_exponent_without_a_dot_is_a_learning_rate():
    """PyYAML reads 2e-5 as text (YAML 1.1); Axolotl accepts it, so must the check."""
    cfg = read_stage_yaml(ROOT / "axolotl_configs" / "competition" / "stage1_qlora.yml")
    assert float(cfg["learning_rate"]) > 0


def test_prepare_stops_on_a_stage_yaml_without_base_model(tmp_path, monkeypatch, capsys, sample_dir):
    shutil.copytree(ROOT / "axolotl_configs" / "sample", tmp_path / "axolotl_configs" / "sample")
    cfg_path = tmp_path / "axolotl_configs" / "sample" / "stage1_qlora.yml"
    cfg_path.write_text("\n".join(ln for ln in cfg_path.read_text(encoding="utf-8").splitlines()
                                  if not ln.startswith("base_model:")), encoding="utf-8")
    shutil.copytree(sample_dir, tmp_path / "data" / "sample")
    settings = {**load_profiles()["sample"], "sources": str(ROOT / "preprocessing" / "sources.yml")}
    profile = Profile(name="sample", settings=settings, root=tmp_path)
    monkeypatch.setattr(prepare, "resolve_profile", lambda name: (profile, "test"))
    before = state(tmp_path)
    assert run_verb("prepare", ["--profile", "sample", "--quiet"]) == 1
    one_line(capsys.readouterr().err, f"prepare: {cfg_path}: base_model: missing")
    assert state(tmp_path) == before


@pytest.mark.parametrize("text, says", [
    ("normalize: XYZ\n", "normalize: 'XYZ': expected one of"),
    ("max_jamo_repeat: -1\n", "max_jamo_repeat: -1: expected 0 or more"),
    ("normalize: NFC\nnormalize: NFD\n", "key 'normalize' given twice (lines 1 and 2)"),
])
def test_cleaning_rules_values(text, says, tmp_path):
    path = tmp_path / "cleaning.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        clean.load_rules(path)
    one_line(str(exc.value), f"{path}: ", says)


@pytest.mark.parametrize("scoring, says", [({"batch_size": 0}, "t.scoring.batch_size: 0: expected 1 or more"),
                                           ({"max_length": -5}, "t.scoring.max_length: -5: expected 1 or more")])
def test_profile_numbers_must_be_positive(scoring, says):
    with pytest.raises(ConfigError) as exc:
        Profile(name="t", settings={"scoring": scoring})
    one_line(str(exc.value), says)


@pytest.mark.parametrize("section, key, value, says", [
    ("distill", "batch_size", 0, "distill.batch_size: 0: expected 1 or more"),
    ("magpie", "max_rows", -1, "magpie.max_rows: -1: expected 1 or more"),
    ("magpie_generate", "temperature", 0, "magpie_generate.temperature: 0.0: expected more than 0"),
    ("dedup", "max_distance", -3, "dedup.max_distance: -3: expected 0 or more"),
])
def test_sources_numbers_are_checked(section, key, value, says, tmp_path):
    data = yaml.safe_load((ROOT / "preprocessing" / "sources.yml").read_text(encoding="utf-8"))
    data[section][key] = value
    path = tmp_path / "sources.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    profile = Profile(name="t", settings={"data_dir": "data", "sources": str(path)}, root=tmp_path)
    with pytest.raises(ConfigError) as exc:
        config.load_config(profile)
    one_line(str(exc.value), f"{path}: ", says)


def test_a_duplicate_key_in_profiles_is_refused(tmp_path):
    path = tmp_path / "profiles.yml"
    path.write_text("sample:\n  data_dir: data/sample\n  data_dir: data/raw\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_profiles(path)
    one_line(str(exc.value), f"{path}: not readable YAML: ", "key 'data_dir' given twice (lines 2 and 3)")


# ---------------------------------------------------------------- accepted although wrong
def write_items(tmp_path: Path, name: str, items) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return path


def test_an_empty_test_file_is_refused(tmp_path, capsys):
    empty = write_items(tmp_path, "test.json", [])
    sub = write_items(tmp_path, "sub.json", [])
    before = state(tmp_path)
    assert validate.main([str(empty)]) == 1
    out = capsys.readouterr()
    assert [ln for ln in out.out.splitlines() + out.err.splitlines() if ln.startswith(str(empty))] == [
        f"{empty}: -: file: an empty list: no items"]
    assert check_submission.main(["--submission", str(sub), "--test", str(empty)]) == 1
    assert one_line(capsys.readouterr().out) == f"{empty}: -: file: an empty list: no items to check against"
    assert state(tmp_path) == before


@pytest.mark.parametrize("speaker", ["1", 3, 0, -5, 1.0])
def test_a_speaker_other_than_1_or_2_is_an_error(speaker, tmp_path, capsys):
    items = json.loads((SAMPLE / "dev.json").read_text(encoding="utf-8"))
    items[2]["input"]["conversation"][1]["speaker"] = speaker
    path = write_items(tmp_path, "dev.json", items)
    assert validate.main([str(path)]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"{path}: ")]
    assert lines == [f"{path}: {items[2]['id']}: input.conversation[1].speaker: expected 1 or 2 (an integer), "
                     f"got {speaker!r}"], err


def test_three_identical_options_are_an_error(tmp_path, capsys):
    items = json.loads((SAMPLE / "dev.json").read_text(encoding="utf-8"))
    inp = items[4]["input"]
    inp["inference_2"] = inp["inference_3"] = inp["inference_1"] + " "
    path = write_items(tmp_path, "dev.json", items)
    assert validate.main([str(path)]) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(f"{path}: ")]
    assert lines == [f"{path}: {items[4]['id']}: input.inference_2: inference_1, inference_2 and inference_3 are the "
                     "same text: nothing to choose between"]


@pytest.mark.parametrize("flag, value", [("--max-length", "0"), ("--batch-size", "0"), ("--batch-size", "-4")])
def test_submit_refuses_zero_and_negative_sizes(flag, value, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(submit, "make_scorer", lambda *a, **k: pytest.fail("scored with a bad size"))
    with pytest.raises(SystemExit) as exc:
        submit.main(["--profile", "sample", "--input", str(SAMPLE / "test.json"), "--output", str(tmp_path / "s.json"),
                     flag, value])
    assert exc.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith(("usage:", " "))]
    assert err == [f"./run.sh submit: error: argument {flag}: {int(value)}: expected a positive integer (1 or more)"]
    assert not any(tmp_path.iterdir())


def test_an_id_with_a_newline_cannot_add_lines_to_reports(tmp_path, capsys):
    gold = json.loads((SAMPLE / "dev.json").read_text(encoding="utf-8"))
    gold[0]["id"] = "evil\n- injected line"
    pred = [{**it, "output": "inference_1" if it["output"] != "inference_1" else "inference_2"} for it in gold]  # all wrong
    gold_path, pred_path = write_items(tmp_path, "gold.json", gold), write_items(tmp_path, "pred.json", pred)
    out = tmp_path / "eval"
    assert evaluate.main(["--profile", "sample", "--gold", str(gold_path), "--pred", str(pred_path), "--out", str(out)]) == 0
    wrong = (out / "wrong_ids.txt").read_text(encoding="utf-8").splitlines()
    assert len(wrong) == len(gold) and wrong[0] == json.dumps(gold[0]["id"])
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "- injected line" not in report.splitlines() and "- evil\\n- injected line" in report.splitlines()


def test_prepare_report_keeps_ids_on_one_line():
    from preprocessing.report import Report, Step

    report = Report("t")
    report.add_source("s", "official", (2,), [])
    report.add_step("s", Step("load", 1, 0)).drop("a\nb", "why")
    assert "- dropped `a\\nb`: why" in report.markdown().splitlines()


# ---------------------------------------------------------------- one run per output folder
@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def hold(folder: Path, pid: int, verb: str = "submit") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    lock.write_text(json.dumps({"verb": verb, "pid": pid, "host": socket.gethostname(), "started": "then"}))
    return lock


def test_a_second_prepare_on_the_same_outputs_is_refused(tmp_path, monkeypatch, capsys, live_pid):
    profile = data_profile(tmp_path)
    use_profile(monkeypatch, profile)
    monkeypatch.setattr(prepare, "run", lambda *a, **k: pytest.fail("ran while another run holds the folder"))
    lock = hold(profile.out, live_pid)
    before = state(tmp_path)
    assert run_verb("prepare", ["--profile", "t", "--quiet"]) == 1
    one_line(capsys.readouterr().err, f"prepare: {profile.out}: in use by submit (pid {live_pid} on {socket.gethostname()}",
             f"lock {lock}", "wait for it to end")
    assert state(tmp_path) == before


def test_a_second_submit_on_the_same_outputs_is_refused(tiny_model_dir, tmp_path, monkeypatch, capsys, live_pid):
    monkeypatch.setattr(submit, "make_scorer", lambda *a, **k: pytest.fail("scored while another run holds the folder"))
    hold(tmp_path / "out", live_pid, "prepare")
    before = state(tmp_path)
    assert run_verb("submit", ["--profile", "sample", "--model", str(tiny_model_dir), "--input", str(SAMPLE / "test.json"),
                               "--output", str(tmp_path / "out" / "s.json"), "--quiet"]) == 1
    verb_line(capsys.readouterr().err, "submit", f"submit: {tmp_path / 'out'}: in use by prepare (pid {live_pid}")
    assert state(tmp_path) == before


def test_a_stale_lock_is_taken_over_and_a_held_one_released(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = hold(tmp_path, dead.pid, "prepare")
    with output_lock(tmp_path, "submit"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with output_lock(tmp_path, "prepare"):  # a verb inside reproduce: the same process
            pass
        assert lock.exists()
    assert not lock.exists()
    one_line(capsys.readouterr().err, f"note: {lock}: taking over a stale lock of prepare (pid {dead.pid}")


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    profile = data_profile(tmp_path)
    use_profile(monkeypatch, profile)

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(prepare, "run", interrupted)
    before = state(tmp_path)
    assert run_verb("prepare", ["--profile", "t", "--quiet"]) == 130
    assert one_line(capsys.readouterr().err) == "prepare: interrupted (Ctrl-C)"
    assert state(tmp_path) == before  # and the lock is gone


def test_competition_prepare_without_data_names_the_files_first(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "axolotl_configs" / "competition", tmp_path / "axolotl_configs" / "competition")
    settings = {**load_profiles()["competition"], "sources": str(ROOT / "preprocessing" / "sources.yml")}
    profile = Profile(name="competition", settings=settings, root=tmp_path)
    assert not profile.base_model_is_local  # a hub id: the tokenizer would come from the hub
    use_profile(monkeypatch, profile)
    for step in ("lengths_plan", "distill_plan"):
        monkeypatch.setattr(prepare, step, lambda *a, **k: pytest.fail("reached the tokenizer/teacher before the data"))
    before = state(tmp_path)
    assert run_verb("prepare", ["--profile", "competition", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "data/raw/train.json: -: file: source 'official': no such file", err
    assert "Traceback" not in err
    assert state(tmp_path) == before


def test_a_control_character_message_says_at_once(tmp_path, capsys):
    path = tmp_path / "ctl.json"
    path.write_bytes(b'[{"id": "a\x01b"}]')
    assert validate.main([str(path)]) == 1
    line = one_line("\n".join(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(str(path))))
    assert line == f"{path}: -: file: not valid JSON: Invalid control character at line 1 column 11"
