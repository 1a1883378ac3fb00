"""maerak/fingerprint.py: one content fingerprint, memoized by (device, inode, size, mtime_ns, ctime_ns)."""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from maerak import fingerprint as fp

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def own_memo(tmp_path, monkeypatch):
    monkeypatch.setenv("MAERAK_FINGERPRINT_MEMO", str(tmp_path / "memo.json"))
    monkeypatch.setattr(fp, "RACY", -1.0)  # memoize files written just now (the tests write them)
    fp.forget()
    yield
    fp.forget()


def counting(monkeypatch) -> list[Path]:
    reads, real = [], fp._hash
    monkeypatch.setattr(fp, "_hash", lambda p: reads.append(p) or real(p))
    return reads


def test_the_memo_saves_the_second_read_and_survives_the_process(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 1000)
    reads = counting(monkeypatch)
    first = fp.file_sha256(f)
    assert fp.file_sha256(f) == first and reads == [f]
    fp.save_memo()
    fp.forget()
    assert fp.file_sha256(f) == first and reads == [f]  # read back from the memo file


@pytest.mark.parametrize("how", ["python", "cp -p", "touch -d"])
def test_a_same_size_same_mtime_replacement_is_caught(tmp_path, monkeypatch, how):
    """cp -p / rsync -a / tar restore / touch -d put size and mtime back; ctime they cannot."""
    f, other = tmp_path / "model.safetensors", tmp_path / "nan.safetensors"
    f.write_bytes(b"good" * 4096)
    other.write_bytes(b"bad!" * 4096)
    st = f.stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = fp.file_sha256(f)
    time.sleep(0.02)  # past the clock tick of the first write
    if how == "python":
        f.write_bytes(other.read_bytes())
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif how == "cp -p":
        subprocess.run(["cp", "-p", str(other), str(f)], check=True)
    else:
        f.write_bytes(other.read_bytes())
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime_ns / 1e9))
        subprocess.run(["touch", "-d", f"{stamp}.{st.st_mtime_ns % 10**9:09d}", str(f)], check=True)
    after = f.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    assert fp.file_sha256(f) != before and fp.file_sha256(f) == fp.file_sha256(other)


def test_a_file_written_within_the_last_tick_is_not_memoized(tmp_path, monkeypatch):
    monkeypatch.setattr(fp, "RACY", 2.0)
    f = tmp_path / "fresh"
    f.write_text("x")
    reads = counting(monkeypatch)
    fp.file_sha256(f)
    fp.file_sha256(f)
    assert reads == [f, f]


def test_model_digest_follows_every_byte_and_not_the_location(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "config.json").write_text("{}")
    (a / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    b = tmp_path / "b"
    subprocess.run(["cp", "-rp", str(a), str(b)], check=True)
    assert fp.model_digest(a) == fp.model_digest(b)
    data = bytearray((b / "model.safetensors").read_bytes())
    data[len(data) // 3] ^= 1  # one bit, outside the first, middle and last MiB a sample would read
    (b / "model.safetensors").write_bytes(bytes(data))
    assert fp.model_digest(a) != fp.model_digest(b)


def test_the_environment_names_lock_torch_cuda_and_device():
    env = fp.environment(ROOT)
    assert set(env) >= {"lock", "torch", "cuda", "device", "python"}
    assert env["torch"] and re.match(r"(cpu|cuda): ", env["device"])
    assert len(fp.environment_digest(ROOT)) == 64


def test_the_stamps_score_cache_resume_caches_and_manifest_call_the_one_module():
    """No other hashing of files or checkpoints remains in the project."""
    users = ["maerak/stamps.py", "inference/caching.py", "training/resume.py", "training/axolotl_run.py",
             "preprocessing/distill.py", "preprocessing/magpie.py", "maerak/manifest.py", "pipeline/verify.py"]
    for rel in users:
        text = (ROOT / rel).read_text(encoding="utf-8")
        assert re.search(r"from maerak(\.fingerprint)? import|maerak\.fingerprint", text), rel
    for path in [*ROOT.glob("*/*.py")]:
        if path.parts[-2] in ("tests", "bench", ".venv") or path.name == "fingerprint.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert "sha256_file" not in text and "sha256_tree" not in text, path  # file hashing: maerak/fingerprint.py
        # size+mtime shortcuts: only the outputs listing (stamps) and in-process parse caches keyed as fingerprint keys
        for line in re.findall(r".*st_mtime.*", text):
            assert path.name == "stamps.py" or "st_ctime_ns" in line, (path, line)


def test_a_hub_base_model_is_recorded_by_the_commit_the_cache_resolved_and_its_content(tmp_path, monkeypatch):
    """No hub here: the competition model's revision is what the local hub cache resolved at
    download time; a new download (another commit) or an edited snapshot shows."""
    from huggingface_hub import constants

    from maerak.manifest import hub_snapshot

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--google--gemma-2-9b-it"
    (repo / "refs").mkdir(parents=True)
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text(f'{{"v": "{commit[0]}"}}')
    (repo / "refs" / "main").write_text("a" * 40)
    first = hub_snapshot("google/gemma-2-9b-it", None)
    assert first["commit"] == "a" * 40 and first["sha256"]
    (repo / "refs" / "main").write_text("b" * 40)
    second = hub_snapshot("google/gemma-2-9b-it", None)
    assert second["commit"] == "b" * 40 and second["sha256"] != first["sha256"]
    assert hub_snapshot("google/gemma-2-9b-it", "a" * 40) == {**first, "revision": "a" * 40}  # pinned: revision_of_model
