"""`./run.sh model` into a directory it may not write (a root-owned bind mount in the image):
one line naming the directory and the UID, exit 1, nothing built."""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.cli import run_verb
from training import embed_model


def _deny(blocked: Path):
    real = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == blocked and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)
    return access


def test_unwritable_dir_finds_the_nearest_existing_parent(tmp_path, monkeypatch):
    target = tmp_path / "models" / "deep" / "gemma"
    assert embed_model.unwritable_dir(target) is None
    monkeypatch.setattr(os, "access", _deny(tmp_path))
    assert embed_model.unwritable_dir(target) == tmp_path


def test_model_into_an_unwritable_directory_is_one_line_naming_it_and_the_uid(monkeypatch, capsys):
    profile, _ = embed_model.resolve_profile("sample")
    models = Path(profile.base_model).parent
    monkeypatch.setattr(embed_model, "is_complete", lambda path: False)
    monkeypatch.setattr(os, "access", _deny(models))
    monkeypatch.setattr(embed_model, "build", lambda target: (_ for _ in ()).throw(AssertionError("built")))
    assert run_verb("model", ["--profile", "sample"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"model: {models}: not writable by UID {os.getuid()}"), err


def test_a_permission_error_where_the_build_writes_is_the_same_line(monkeypatch, capsys):
    profile, _ = embed_model.resolve_profile("sample")
    models = Path(profile.base_model).parent
    monkeypatch.setattr(embed_model, "is_complete", lambda path: False)

    def build(target):
        raise PermissionError(13, "Permission denied", str(target.parent / ".gemma-3-270m.building-x"))
    monkeypatch.setattr(embed_model, "build", build)
    assert run_verb("model", ["--profile", "sample"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"model: {embed_model.permission_error(models)}", err
