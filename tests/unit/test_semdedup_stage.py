"""The semantic kind's pure pieces between Beam steps (transforms/dedup/semdedup_stage.py).

The fast paths give the pure layer's very bits (normalisation, assignment), the k-means
start kept per batch and merged in any grouping is kmeans.initial_indices' set, and the
checks that guard against lost elements fail loudly.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from semdedup_pool import COLUMN, batches_of, planted_pool

from transforms.dedup.kmeans import initial_indices
from transforms.dedup.semdedup import assign_clusters, normalise_embeddings, prepare_centroids
from transforms.dedup.semdedup_stage import (
    Starts,
    Tally,
    assigned_clusters,
    batch_starts,
    drop_marked,
    eps_grid,
    normalised_rows,
    semdedup_figures,
)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), bad=st.integers(0, 3))
def test_fast_paths_give_the_pure_layers_bits(seed, n, bad):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 24)) * 10.0 ** rng.integers(-3, 3, size=(n, 1))).astype(np.float32)
    for _ in range(bad if n else 0):  # NaN, infinite and zero rows: unusable
        x[rng.integers(n)] = rng.choice([np.nan, np.inf, 0.0])
    want_x, want_usable = normalise_embeddings(x)
    got_x, got_usable = normalised_rows(x)
    assert got_x.tobytes() == want_x.tobytes() and got_usable.tolist() == want_usable.tolist()
    centroids = prepare_centroids(rng.normal(size=(7, 24)))
    want = assign_clusters(want_x, centroids, want_usable)
    got = assigned_clusters(got_x, centroids, got_usable, rows=int(rng.integers(1, 64)))
    assert got[0].tolist() == want[0].tolist()
    assert got[1].tobytes() == want[1].tobytes()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 12), batch_rows=st.integers(1, 120))
def test_starts_kept_per_batch_and_merged_in_any_grouping_are_the_initial_indices(seed, k, batch_rows):
    x, keys, files, rows, _ = planted_pool(seed % 5, n_base=60)
    order = np.random.default_rng(seed).permutation(len(x))
    found = [batch_starts(b, COLUMN, seed, k) for b in batches_of(x, keys, files, rows, batch_rows, order)]
    rng = np.random.default_rng(seed + 1)
    while len(found) > 1:  # merge random neighbours, as a combiner's tree would
        i = int(rng.integers(len(found) - 1))
        found[i : i + 2] = [Starts.merge(found[i : i + 2], k)]
    want = initial_indices(keys, np.ones(len(x), bool), files, rows, seed, k)
    assert list(zip(found[0].files.tolist(), found[0].rows.tolist(), strict=True)) == [
        (int(files[i]), int(rows[i])) for i in want
    ]
    assert found[0].x.tobytes() == normalise_embeddings(x)[0][want].tobytes()


def test_a_marked_record_missing_from_its_batch_fails_the_run():
    batch = pa.RecordBatch.from_pydict({"key": ["a", "b"], "__source_file": [0, 0], "__source_row": [0, 1]})
    assert drop_marked(batch, np.array([1], np.uint64)).column("key").to_pylist() == ["a"]
    with pytest.raises(ValueError, match="1 duplicates marked, 0 in their batch"):
        drop_marked(batch, np.array([(1 << 40) | 1], np.uint64))


def test_figures_fail_when_records_clustered_were_not_all_judged():
    removed = np.zeros(len(eps_grid(0.01)), np.int64)
    figures = semdedup_figures(
        {0: 3, 2: 1}, 3, Tally(4, removed, 0), eps=0.01, keep="hard", max_cluster_size=2, fit=None
    )
    assert figures["semdedup"]["parts_split"] == 1 and figures["semdedup"]["empty_clusters"] == 1
    assert figures["semdedup"]["cluster_sizes"] == {"min": 0, "median": 1.0, "p99": 2.96, "max": 3}
    with pytest.raises(ValueError, match="4 records clustered, 3 judged"):
        semdedup_figures({0: 3, 2: 1}, 3, Tally(3, removed, 0), eps=0.01, keep="hard", max_cluster_size=2, fit=None)
