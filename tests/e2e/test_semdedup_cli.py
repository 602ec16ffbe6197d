"""--dedup semantic through the command line: a parquet + npz pool with planted near-duplicates.

The duplicates/ rows and the subset equal transforms.dedup.local.semdedup_in_memory on the
same embeddings (itself checked against a SemDeDup written from the spec), on two worker
processes and in process; with --semdedup_clusters K, semdedup/centroids.npy holds the very
bits of kmeans.fit_centroids; stats.json carries the eps curve.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from semdedup_pool import planted_pool

from beam_pipeline import curate
from transforms.dedup.local import semdedup_in_memory
from transforms.dedup.pairwise import removed_fraction

TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
SHARDS = 3


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Shards of uid/url/text with an npz (l14_img, l14_txt) beside each; the records in file order."""
    directory = tmp_path_factory.mktemp("semdedup_pool")
    x, names, _, _, centroids = planted_pool(7)
    keys = [hashlib.md5(name.encode()).hexdigest() for name in names]  # DataComp uids: 32 hex digits
    files, rows = np.zeros(len(x), np.int64), np.zeros(len(x), np.int64)
    for shard, idx in enumerate(np.array_split(np.arange(len(x)), SHARDS)):
        path = directory / f"{shard:08d}.parquet"
        table = pa.table(
            {
                "uid": [keys[i] for i in idx],
                "url": [f"https://e.x/{keys[i]}.jpg" for i in idx],
                "text": ["a"] * len(idx),
            }
        )
        pq.write_table(table, path, row_group_size=50)
        np.savez(path.with_suffix(".npz"), l14_img=x[idx], l14_txt=x[idx][:, ::-1])
        files[idx], rows[idx] = shard, np.arange(len(idx))
    np.save(directory / "c.npy", centroids)
    return directory, x, keys, files, rows, centroids


def _run(pool, out, *flags) -> dict:
    directory = pool[0]
    argv = ["--input", str(directory / "*.parquet"), "--input_preset", "datacomp", "--output_dir", str(out)]
    argv += ["--balance", "none", "--dedup", "semantic", "--max_cluster_size", "40", "--seed", "3", *flags]
    assert curate.run(argv) == 0
    return json.loads((out / "stats.json").read_text())


def _duplicates(out) -> list:
    table = pq.read_table(out / "duplicates", columns=["key", "kind", "duplicate_of", "similarity"])
    return sorted(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


def _subset(out) -> list:
    return sorted(pq.read_table(out / "subset", columns=["key"]).column("key").to_pylist())


def _expected(pool, **kw):
    _, x, keys, files, rows, _ = pool
    got = semdedup_in_memory(x, keys, files, rows, seed=3, eps=0.01, max_cluster_size=40, **kw)
    dups = sorted(
        (keys[i], "semantic", keys[got.duplicate_of[i]], float(got.score[i])) for i in np.flatnonzero(got.duplicate)
    )
    return dups, sorted(k for k, d in zip(keys, got.duplicate, strict=True) if not d), got


@pytest.mark.parametrize("fitted", [False, True])
def test_two_workers_and_in_process_remove_the_in_memory_duplicates(pool, fitted, tmp_path):
    flags = ["--semdedup_clusters", "5", "--semdedup_iterations", "6"] if fitted else ["--semdedup_centroids"]
    flags = flags if fitted else flags + [str(pool[0] / "c.npy")]
    stats = {name: _run(pool, tmp_path / name, *flags, *extra) for name, extra in (("one", []), ("two", TWO_WORKERS))}
    dups, subset, got = _expected(pool, **({"clusters": 5, "iterations": 6} if fitted else {"centroids": pool[5]}))
    assert len(dups) > 30
    for name in ("one", "two"):
        out = tmp_path / name
        assert _duplicates(out) == dups
        assert _subset(out) == subset
        assert np.load(out / "semdedup" / "centroids.npy").tobytes() == np.asarray(got.centroids).tobytes()
        section = stats[name]["semdedup"]
        assert section["centroids"] == ("fitted" if fitted else "given")
        assert stats[name]["deduplicated_by_kind"] == {"semantic": len(dups)}
        curve = dict((e, f) for e, f in section["eps_curve"])
        assert curve[0.01] == len(dups) / len(pool[2])
        assert list(curve.values()) == removed_fraction(got.score, list(curve)).tolist()
        scores = pq.read_table(out / "semdedup" / "scores", columns=["key", "score"])
        assert scores.num_rows == len(pool[2])
        page = (out / "report.html").read_text()
        assert "<h3>SemDeDup</h3>" in page and "semdedup_eps.png" in page
        assert (out / "plots" / "semdedup_eps.png").stat().st_size > 0
    if fitted:
        assert stats["one"]["semdedup"]["iterations"] == stats["two"]["semdedup"]["iterations"]
