"""requirements.lock resolves against torch 2.13.0's Linux (CUDA) wheel requirements (vendored), offline."""
from __future__ import annotations

import subprocess
import sys

from pipeline import lock_check

ROOT = lock_check.ROOT


def test_the_lock_is_consistent_with_the_cuda_torch():
    lock = lock_check.LOCK.read_text(encoding="utf-8")
    assert lock_check.conflicts(lock, lock_check.TORCH_REQUIRES.read_text(encoding="utf-8")) == []
    assert "triton" in lock_check.lock_pins(lock)  # Axolotl needs it: pinned, and pinned as torch pins it


def test_a_planted_triton_pin_fails_the_check(tmp_path):
    bad = tmp_path / "requirements.lock"
    bad.write_text(lock_check.LOCK.read_text(encoding="utf-8").replace("triton==3.7.1", "triton==3.9.0"), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pipeline.lock_check", "--lock", str(bad)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "triton==3.9.0" in lines[0] and "triton==3.7.1" in lines[0], proc.stderr


def test_markers_decide_what_applies():
    requires = ('triton==3.7.1; platform_system == "Linux" and python_version < "3.15"\n'
                'pyyaml>=99; extra == "pyyaml"\n'
                'sympy>=1.13.3\n'
                'foo==1; platform_system == "Windows"\n')
    lock = "triton==3.7.1\npyyaml==6.0.2\nsympy==1.13.1\nfoo==2\n"
    found = lock_check.conflicts(lock, requires)
    assert len(found) == 1 and "sympy==1.13.1" in found[0]  # the extra and the Windows line do not apply


def test_a_lock_line_that_is_not_a_pin_is_refused():
    import pytest

    with pytest.raises(ValueError, match=r"requirements.lock:2: 'triton>=3'"):
        lock_check.lock_pins("a==1\ntriton>=3\n")
