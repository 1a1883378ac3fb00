"""Simhash near-duplicate removal and contamination checks.

The unit of comparison is the FULL training example, in two parts: the conversation
and the rest (question, referenced utterances, options). Two examples are near-
duplicates only when BOTH parts are within `max_distance` bits. Items that share a
conversation but ask a different question differ in the second part, so they all
stay; a copy of an item with a few characters changed is caught.

Fingerprints are 64-bit simhashes of character shingles, computed for many texts at
once with NumPy (`fingerprints`); `feature_hash` is the same hash in plain Python, so
`simhash.Simhash(shingles(text), hashfunc=feature_hash)` gives the identical value
(tests check this). Lookup is a band index (`candidate_pairs`): k+1 bit bands per part,
keys sorted with NumPy, so only examples sharing a band pair are compared (exact for
distances <= k by pigeonhole), never all pairs; `pairwise_near_duplicates` is the
O(n^2) baseline with the `simhash` package's distance, for tests and bench/dedup.py.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from simhash import Simhash

from maerak.prompt import render_input
from maerak.schema import Item

F = 64
SMALL_GROUP = 16
MASK = (1 << 64) - 1
P1 = 0x100000001B3
P2 = (P1 * P1) & MASK
SHINGLE = 3
_PAD = "\0"



def _mix(x: int) -> int:
    """splitmix64 finaliser (Python ints, masked to 64 bits)."""
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def normalize(text: str) -> str:
    text = " ".join(text.lower().split())
    return text + _PAD * (SHINGLE - len(text)) if len(text) < SHINGLE else text


def shingles(text: str) -> list[str]:
    text = normalize(text)
    return [text[i : i + SHINGLE] for i in range(len(text) - SHINGLE + 1)]


def feature_hash(feature: bytes) -> int:
    """The hash of one shingle (UTF-8 bytes, as `simhash.Simhash` passes it)."""
    c = [ord(ch) for ch in feature.decode("utf-8")]
    return _mix((c[0] * P2 + c[1] * P1 + c[2]) & MASK)


def reference_fingerprint(text: str) -> int:
    """The `simhash` package's own computation, for tests and the O(n^2) baseline."""
    return Simhash(shingles(text), f=F, hashfunc=feature_hash).value


def fingerprints(texts: Sequence[str], chunk: int = 2048) -> np.ndarray:
    """64-bit simhash of every text (uint64 array), vectorised over chunks of texts."""
    out = np.zeros(len(texts), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for lo in range(0, len(texts), chunk):
            out[lo : lo + chunk] = _fingerprint_chunk([normalize(t) for t in texts[lo : lo + chunk]])
    return out


def _fingerprint_chunk(texts: list[str]) -> np.ndarray:
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype="<u4").astype(np.uint64)
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    h = codes[:-2] * np.uint64(P2) + codes[1:-1] * np.uint64(P1) + codes[2:]
    # keep shingles that start and end inside one text
    owner = np.repeat(np.arange(len(texts)), lens)[:-2]
    rel = np.arange(len(h)) - starts[owner]
    h = h[rel <= lens[owner] - SHINGLE]
    z = h + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    counts = lens - SHINGLE + 1
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    bits = np.unpackbits(z.astype("<u8").view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    sums = np.add.reduceat(bits, offsets, axis=0, dtype=np.int32)
    fp = np.packbits(sums * 2 > counts[:, None], axis=1, bitorder="little")
    return fp.view("<u8").reshape(-1)


def distance(a: int, b: int) -> int:
    return (int(a) ^ int(b)).bit_count()


# --- examples ----------------------------------------------------------------------------

def item_parts(item: Item) -> tuple[str, str]:
    """(conversation, question + referenced utterances + options) of the rendered example."""
    text = render_input(item)
    conv, _, rest = text.partition("\n\n[Question]\n")
    return conv, rest


def row_parts(row: dict) -> tuple[str, str]:
    """A generic alpaca row: (instruction + input, output)."""
    return f"{row.get('instruction', '')}\n{row.get('input', '')}", str(row.get("output", ""))


def part_fingerprints(parts: Sequence[tuple[str, str]]) -> np.ndarray:
    """(n, 2) uint64: fingerprints of the first and second part of each example."""
    if not parts:
        return np.zeros((0, 2), dtype=np.uint64)
    return np.stack([fingerprints([p[0] for p in parts]), fingerprints([p[1] for p in parts])], axis=1)


@dataclass(frozen=True)
class Match:
    index: int        # the example that matched
    other: int        # the kept (or eval) example it matched
    distances: tuple[int, int]


def _band_keys(fps: np.ndarray, k: int) -> np.ndarray:
    """(n, (k+1)^2) uint64 keys: one per (conversation band, rest band) pair.

    Both parts within k bits means (pigeonhole, k+1 bands each) at least one band of
    each part is identical, so the pair shares at least one key: the lookup is exact
    for the rule, and only examples that share a key are ever compared.
    """
    nb = k + 1
    edges = np.linspace(0, F, nb + 1).astype(int)
    bands = []
    for part in (0, 1):
        col = fps[:, part]
        bands.append([(col >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1) for lo, hi in zip(edges[:-1], edges[1:])])
    width = int(max(np.diff(edges)))
    keys = [(np.uint64(i * nb + j) << np.uint64(2 * width)) | (bands[0][i] << np.uint64(width)) | bands[1][j]
            for i in range(nb) for j in range(nb)]
    return np.stack(keys, axis=1)


def candidate_pairs(fps: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j), i < j, with both parts within max_distance bits (sorted by j, then i)."""
    n = len(fps)
    if n < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if 2 * (F // (max_distance + 1) + 1) + 2 * (max_distance + 1).bit_length() > 64:
        raise ValueError(f"max_distance {max_distance} too small for the band index")
    keys = _band_keys(fps, max_distance).ravel()
    owner = np.repeat(np.arange(n, dtype=np.int64), keys.size // n)
    order = np.argsort(keys, kind="stable")
    keys, owner = keys[order], owner[order]
    bounds = np.flatnonzero(np.diff(keys)) + 1
    starts = np.concatenate(([0], bounds))
    sizes = np.diff(np.concatenate((starts, [len(keys)])))
    left, right = [], []
    # small groups: compare each element with the next d (vectorised over all groups)
    small = np.repeat(sizes <= SMALL_GROUP, sizes)
    ks, os_ = keys[small], owner[small]
    for d in range(1, SMALL_GROUP):
        if d >= len(ks):
            break
        same = ks[d:] == ks[:-d]
        if not same.any():
            break
        left.append(os_[:-d][same])
        right.append(os_[d:][same])
    # big groups (templated text makes some bands common): all pairs inside, in blocks
    for st, size in zip(starts[sizes > SMALL_GROUP].tolist(), sizes[sizes > SMALL_GROUP].tolist()):
        members = owner[st : st + size]
        for lo in range(0, size, 1024):
            block = members[lo : lo + 1024]
            d0 = np.bitwise_count(fps[block, 0][:, None] ^ fps[members, 0][None, :])
            d1 = np.bitwise_count(fps[block, 1][:, None] ^ fps[members, 1][None, :])
            r, c = np.nonzero((d0 <= max_distance) & (d1 <= max_distance))
            left.append(block[r])
            right.append(members[c])
    if not left:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a, b = np.concatenate(left), np.concatenate(right)
    i, j = np.minimum(a, b), np.maximum(a, b)
    d0 = np.bitwise_count(fps[i, 0] ^ fps[j, 0])
    d1 = np.bitwise_count(fps[i, 1] ^ fps[j, 1])
    ok = (d0 <= max_distance) & (d1 <= max_distance) & (i != j)
    code = np.unique(j[ok] * n + i[ok])  # sorted by j, then i
    return code % n, code // n


def near_duplicates(fps: np.ndarray, max_distance: int = 3, progress: Iterable | None = None) -> list[Match]:
    """Greedy, in input order: an example matching an earlier KEPT one is a duplicate.

    Returns one Match per dropped example (pointing at the first kept example it matched).
    """
    fps = np.asarray(fps, dtype=np.uint64).reshape(-1, 2)
    i_arr, j_arr = candidate_pairs(fps, max_distance)
    dropped: dict[int, Match] = {}
    for i, j in zip(i_arr.tolist(), j_arr.tolist()):
        if j not in dropped and i not in dropped:
            dropped[j] = Match(j, i, (distance(fps[i, 0], fps[j, 0]), distance(fps[i, 1], fps[j, 1])))
    if progress is not None and hasattr(progress, "update"):
        progress.update(len(fps))
        progress.close()
    return sorted(dropped.values(), key=lambda m: m.index)


def pairwise_near_duplicates(fps: np.ndarray, max_distance: int = 3) -> list[Match]:
    """The O(n^2) baseline with the same rule (and the `simhash` package's distance)."""
    kept: list[int] = []
    dropped: list[Match] = []
    hashes = [(Simhash(int(a), f=F), Simhash(int(b), f=F)) for a, b in fps]
    for i, (a, b) in enumerate(hashes):
        for j in kept:
            d0, d1 = a.distance(hashes[j][0]), b.distance(hashes[j][1])
            if d0 <= max_distance and d1 <= max_distance:
                dropped.append(Match(i, j, (d0, d1)))
                break
        else:
            kept.append(i)
    return dropped


def cross_matches(train_fps: np.ndarray, eval_fps: np.ndarray, max_distance: int = 3) -> list[Match]:
    """Every (train, eval) near-duplicate pair: `index` is the train example, `other` the eval one."""
    n = len(train_fps)
    if n == 0 or len(eval_fps) == 0:
        return []
    both = np.concatenate([np.asarray(train_fps, dtype=np.uint64), np.asarray(eval_fps, dtype=np.uint64)])
    i_arr, j_arr = candidate_pairs(both, max_distance)
    out = [Match(i, j - n, (distance(both[i, 0], both[j, 0]), distance(both[i, 1], both[j, 1])))
           for i, j in zip(i_arr.tolist(), j_arr.tolist()) if i < n <= j]
    return sorted(out, key=lambda m: (m.index, m.other))
