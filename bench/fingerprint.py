"""Benchmark: the content fingerprint of a checkpoint (maerak/fingerprint.py), first read vs memoized.

    .venv/bin/python bench/fingerprint.py [MODEL_DIR]   (default models/gemma-3-270m)

"first read" hashes every byte (sha256; the file may already be in the page cache, as after
training wrote it); "memoized" is the next run over the unchanged folder: one stat per file and a
memo lookup by (device, inode, size, mtime_ns, ctime_ns). The memo is a fresh file under /tmp.
Not a test: numbers go to the docs.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    model = Path(sys.argv[1] if len(sys.argv) > 1 else "models/gemma-3-270m")
    if not (model / "config.json").is_file():
        print(f"{model}: no checkpoint (build it with ./run.sh model)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MAERAK_FINGERPRINT_MEMO"] = str(Path(tmp) / "memo.json")
        from maerak import fingerprint as fp

        fp.RACY = -1.0  # a just-built folder counts as settled here
        size = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
        t0 = time.perf_counter()
        first = fp.model_digest(model)
        t1 = time.perf_counter()
        fp.forget()  # a new process: the memo is read back from its file
        second = fp.model_digest(model)
        t2 = time.perf_counter()
    assert first == second
    cold, warm = t1 - t0, t2 - t1
    print(f"{model} ({size / 1e6:.0f} MB): first read {cold:.2f} s ({size / 1e6 / cold:.0f} MB/s), "
          f"memoized {warm * 1e3:.1f} ms; ratio {cold / warm:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
