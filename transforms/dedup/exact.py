"""Exact duplicates: the survivor of a group of records sharing a url or text key (docs/dedup.md).

Pure numpy, no Beam import. The survivor of a group is the member with the smallest
draw(seed, sample_key + "\\x00dedup"); equal draws (equal sample keys) go to the earlier
input position (source file index in sorted path order, then row). The rule is a minimum
over (draw, file, row), so it is the same however the group arrived: a distributed stage
keys records by `keys.url_key`/`keys.text_key`, and either combines `candidates` with
`min` (CombinePerKey: only the survivor's identity travels) or groups the members and
calls `survivor_index`. Records without a key are never duplicates.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.dedup.keys import DEDUP, purpose_draws


class Candidate(NamedTuple):
    """One member's claim to survive; the smallest tuple wins (compare with `min`)."""

    draw: float
    source_file: int
    source_row: int
    key: str


def survivor_draws(sample_keys: Iterable[str], seed: int) -> np.ndarray:
    """draw(seed, key + "\\x00dedup") per sample key, float64."""
    return purpose_draws(sample_keys, seed, DEDUP)


def candidates(sample_keys: Sequence[str], source_files, source_rows, seed: int) -> list[Candidate]:
    """A Candidate per record of a batch (the value a CombinePerKey on the dedup key carries)."""
    draws = survivor_draws(sample_keys, seed).tolist()  # tolist: Python floats and ints at C speed
    files = np.asarray(source_files, dtype=np.int64).tolist()
    rows = np.asarray(source_rows, dtype=np.int64).tolist()
    return list(map(Candidate._make, zip(draws, files, rows, sample_keys, strict=True)))


def survivor_index(draws, source_files, source_rows) -> int:
    """Index of the survivor among a group's members: smallest (draw, file, row)."""
    draws = np.asarray(draws, dtype=np.float64)
    if len(draws) == 0:
        raise ValueError("a group has at least one member")
    order = np.lexsort((np.asarray(source_rows), np.asarray(source_files), draws))
    return int(order[0])


def duplicate_of(dedup_keys: Sequence[str | None], sample_keys: Sequence[str], source_files, source_rows, seed: int):
    """In memory, for records of one kind: the index of each record's survivor, or -1.

    -1 for a survivor and for a record without a key. The reference for a stage's output
    (and what a single-process run does); int64 array.
    """
    draws = survivor_draws(sample_keys, seed)
    files = np.asarray(source_files, dtype=np.int64)
    rows = np.asarray(source_rows, dtype=np.int64)
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(dedup_keys):
        if key is not None:
            groups.setdefault(key, []).append(i)
    out = np.full(len(sample_keys), -1, dtype=np.int64)
    for members in groups.values():
        idx = np.array(members)
        best = idx[survivor_index(draws[idx], files[idx], rows[idx])]
        out[idx] = best
        out[best] = -1
    return out


def chain_duplicate_of(kind_keys: Sequence[Sequence[str | None]], sample_keys, source_files, source_rows, seed: int):
    """Several kinds in order (url, then text): each on the survivors of the ones before.

    Returns (duplicate_of, kind): per record the survivor's index or -1, and the index of
    the kind that removed it or -1 (docs/dedup.md, "Composition").
    """
    n = len(sample_keys)
    files = np.asarray(source_files, dtype=np.int64)
    rows = np.asarray(source_rows, dtype=np.int64)
    alive = np.arange(n)
    dup = np.full(n, -1, dtype=np.int64)
    kind = np.full(n, -1, dtype=np.int64)
    for k, keys in enumerate(kind_keys):
        sub = duplicate_of([keys[i] for i in alive], [sample_keys[i] for i in alive], files[alive], rows[alive], seed)
        hit = sub >= 0
        dup[alive[hit]] = alive[sub[hit]]
        kind[alive[hit]] = k
        alive = alive[~hit]
    return dup, kind


def sorted_duplicates(dedup_keys, draws, source_files, source_rows) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised `group_duplicates` over many groups at once: (duplicate indices, their survivor's index).

    `dedup_keys`: a pyarrow string array (every value a key: records without one are left
    out before); the others per record. Sorting by (key, draw, file, row) puts each group
    together with its survivor first, so a duplicate is any record whose key equals the one
    before it, and its survivor is its group's first. Both arrays are int64, in that order.
    """
    n = len(dedup_keys)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    table = pa.table(
        {
            "k": dedup_keys,
            "d": np.asarray(draws, dtype=np.float64),
            "f": np.asarray(source_files, dtype=np.int64),
            "r": np.asarray(source_rows, dtype=np.int64),
        }
    )
    order = pc.sort_indices(table, sort_keys=[(name, "ascending") for name in ("k", "d", "f", "r")]).to_numpy()
    keys = table.column("k").take(pa.array(order))
    same = np.zeros(n, dtype=bool)
    if n > 1:
        same[1:] = pc.equal(keys.slice(1), keys.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(~same)  # each group's first position: its survivor
    first = starts[np.cumsum(~same) - 1]
    duplicate = np.flatnonzero(same)
    return order[duplicate].astype(np.int64), order[first[duplicate]].astype(np.int64)


def key_group_duplicates(dedup_keys, sample_keys, source_files, source_rows, seed: int):
    """`sorted_duplicates` of records given with their sample keys: (duplicate indices, survivor indices).

    The survivor draws are computed only for records whose key has another member (a
    record alone in its group survives without one): most keys of a pool are unique, and
    the draw (a BLAKE2b per record) is most of the cost. `dedup_keys`, `sample_keys`:
    pyarrow string arrays (every dedup key set); int64 arrays out.
    """
    keys = dedup_keys.combine_chunks() if isinstance(dedup_keys, pa.ChunkedArray) else dedup_keys
    n = len(keys)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = pc.sort_indices(keys).to_numpy()
    ordered = keys.take(pa.array(order))
    same = pc.equal(ordered.slice(1), ordered.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    shared = np.zeros(n, dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    members = np.sort(order[shared])
    if len(members) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    index = pa.array(members)
    draws = survivor_draws(sample_keys.take(index).to_pylist(), seed)
    files = np.asarray(source_files, dtype=np.int64)[members]
    rows = np.asarray(source_rows, dtype=np.int64)[members]
    duplicate, survivor = sorted_duplicates(keys.take(index), draws, files, rows)
    return members[duplicate], members[survivor]
