"""The selection's parts: made where the blocks are made, never a whole class in one place.

Two kinds of check (docs/selection.md, "In the pipeline"):
- the split of each block by the plan's part count, with the budgets from the part sizes,
  is exactly the split of the whole class (hypothesis, against stage.split_class, the
  whole-class split every earlier version made);
- CovarianceSelect in a TestPipeline on a pool and on a pool four times larger (same
  --max_class_size): the most members any greedy call holds, and the largest block any
  step emits, stay at the part size and the batch size, while the largest class grows
  past four parts. A stage that grouped a class's members (or split after grouping)
  fails it. The picks equal transforms.selection.local's on the same records.
"""

from __future__ import annotations

import pickle

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

import transforms.beam.select as select_module
from transforms.beam.select import CovarianceSelect
from transforms.core.columns import KEPT, KEY, SOURCE_FILE, SOURCE_ROW
from transforms.core.hashing import key_hashes
from transforms.selection.covariance import CrossCovSum, normalise_rows
from transforms.selection.local import select_in_memory
from transforms.selection.parts import part_targets, split_block
from transforms.selection.stage import MemberBlock, SelectSpec, split_class

DIM = 8


def _block(rng, n: int) -> MemberBlock:
    x = normalise_rows(rng.normal(size=(n, DIM)))
    y = normalise_rows(rng.normal(size=(n, DIM)))
    ties = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, size=n, dtype=np.uint64)
    return MemberBlock(np.arange(n, dtype=np.uint64), ties, x.astype(np.float32), y.astype(np.float32))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    cap=st.one_of(st.none(), st.integers(1, 150)),
    fraction=st.floats(0, 1),
    cuts=st.lists(st.integers(0, 400), max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_splitting_blocks_then_budgeting_parts_equals_splitting_the_whole_class(n, cap, fraction, cuts, seed):
    rng = np.random.default_rng(seed)
    members = _block(rng, n)
    budget = int(round(fraction * n))
    class_sum = CrossCovSum().add_batch(members.x.astype(np.float64), members.y.astype(np.float64))
    whole = {part: work for part, work in split_class(members, class_sum, budget, cap)}
    pieces: dict = {}
    bounds = [0, *sorted(c for c in cuts if c < n), n]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        for part, piece in split_block(members.take(np.arange(start, stop)), n, cap):
            pieces.setdefault(part, []).append(piece)
    sizes = {part: sum(len(p) for p in of_part) for part, of_part in pieces.items()}
    parts = max(whole) + 1 if whole else 1
    targets = dict(
        part_targets(class_sum.count, class_sum.matrix(), budget, max(parts, max(sizes, default=0) + 1), sizes)
    )
    assert sorted(targets) == sorted(whole)
    for part, work in whole.items():
        assert sorted(np.concatenate([p.ids for p in pieces[part]]).tolist()) == sorted(work.members.ids.tolist())
        assert targets[part].budget == work.budget
        assert targets[part].class_size == work.class_size == n
        assert targets[part].part_size == len(work.members)


def _pool_batches(rows: int, classes: int, seed: int, batch_rows: int = 64):
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(classes, DIM)) * 3
    members = rng.integers(0, classes, size=rows)
    x = directions[members] + rng.normal(size=(rows, DIM))
    y = x + 0.5 * rng.normal(size=(rows, DIM))
    keys = [f"{seed}-{i}" for i in range(rows)]
    batches = []
    for start in range(0, rows, batch_rows):
        stop = min(rows, start + batch_rows)
        flat = pa.array(x[start:stop].astype(np.float32).reshape(-1))
        flat_y = pa.array(y[start:stop].astype(np.float32).reshape(-1))
        batches.append(
            pa.RecordBatch.from_arrays(
                [
                    pa.array(keys[start:stop]),
                    pa.array(np.full(stop - start, start // 1000, np.int64)),
                    pa.array(np.arange(start, stop, dtype=np.int64)),
                    pa.array(np.ones(stop - start, bool)),
                    pa.FixedSizeListArray.from_arrays(flat, DIM),
                    pa.FixedSizeListArray.from_arrays(flat_y, DIM),
                ],
                names=[KEY, SOURCE_FILE, SOURCE_ROW, KEPT, "img", "txt"],
            )
        )
    return batches, keys, x, y


@pytest.mark.parametrize("rows", [1200, 4800])
def test_no_step_holds_more_than_a_part_whatever_the_pool(rows, monkeypatch):
    cap, batch_rows = 100, 64
    batches, keys, x, y = _pool_batches(rows, classes=3, seed=rows, batch_rows=batch_rows)
    spec = SelectSpec(0.2, 7, "img", "txt", None, cap)
    held: list = []
    blocks: list = []
    load = select_module.load_members
    split = select_module.split_member
    monkeypatch.setattr(select_module, "load_members", lambda m: held.append(len(r := load(m))) or r)
    monkeypatch.setattr(select_module, "split_member", lambda m, n, c: blocks.append(len(m)) or split(m, n, c))
    expected = select_in_memory(key_hashes(keys), x.astype(np.float32), y.astype(np.float32), 0.2, 7, None, cap)
    with TestPipeline() as pipeline:
        selected = pipeline | beam.Create(batches, reshuffle=False) | CovarianceSelect(spec)
        kept = selected.batches | beam.FlatMap(
            lambda b: [k for k, f in zip(b.column(KEY).to_pylist(), b.column(KEPT).to_pylist(), strict=True) if f]
        )
        assert_that(kept, equal_to([keys[i] for i in expected.kept]))
    # One pseudo-class (no class embeddings): the whole pool, split into ceil(rows / cap) parts.
    assert len(held) == -(-rows // cap)
    assert max(held) <= 2 * cap < rows / 4  # a part, with the binomial spread of the split
    assert max(blocks) <= batch_rows


def test_progress_without_balancing_counts_records_and_selection_parts():
    from beam_pipeline.progress import progress_line

    totals = {"SelectRead": 12_000, "SelectMembers": 9_000, "SelectParts": 40, "SelectPartsDone": 7}
    line = progress_line(totals, 3.0, balancing=False)
    assert "records read 12,000" in line and "reaching the selection 9,000" in line
    assert "selection parts done 7 / 40" in line
    assert "parts" not in progress_line({"SelectRead": 5}, 3.0, balancing=False)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=12), order=st.randoms(use_true_random=False))
def test_class_sum_accumulator_is_exact_whatever_the_split_and_merge_order(sizes, order):
    from transforms.selection.parts import ClassSumAccumulator

    rng = np.random.default_rng(len(sizes))
    blocks = [_block(rng, n) for n in sizes]
    # As the combiner sends them: pickled (rows, or a folded sum in 32-bit limbs).
    accumulators = [pickle.loads(pickle.dumps(ClassSumAccumulator().add(b.x, b.y))) for b in blocks]
    order.shuffle(accumulators)
    total = accumulators[0]
    for other in accumulators[1:]:
        total.merge(other)
    expected = CrossCovSum()
    for b in blocks:
        expected.add_batch(b.x.astype(np.float64), b.y.astype(np.float64))
    result = total.result()
    assert result.count == sum(sizes)
    if result.count:
        assert (result.integer_matrix() == expected.integer_matrix()).all()


def test_a_lost_element_fails_the_run_instead_of_selecting_from_less():
    """What Beam's multi-process engine dropped under load (docs/beam-notes.md): each check raises."""
    block = _block(np.random.default_rng(1), 10)
    class_sum = CrossCovSum().add_batch(block.x.astype(np.float64), block.y.astype(np.float64))
    assert len(dict(part_targets(class_sum.count, None, 2, 2, {0: 4, 1: 6}))) == 2
    with pytest.raises(ValueError, match="do not add up"):
        dict(part_targets(class_sum.count, None, 2, 2, {0: 4}))  # a block's part sizes lost
    with pytest.raises(ValueError, match="0 class_sum values"):
        select_module._one(3, {"class_sum": []}, "class_sum")  # a class sum lost
    with pytest.raises(ValueError, match="2 budget values"):
        select_module._one(3, {"budget": [(1, 1), (1, 1)]}, "budget")  # a group split in two
    with pytest.raises(ValueError, match="4 records marked selected, 5 picked"):
        select_module._check_marked({"records_selected": 5}, 4)


def test_on_a_local_engine_only_references_cross_stages_whatever_the_pool_or_the_classes(tmp_path, monkeypatch):
    """The runner of a local engine holds what crosses a stage in the launcher's memory, decoded
    (transforms.beam.select_parts): no member block, no class's rows and no per-class d x d
    sum may cross, only references to spill files; the d x d sums that do cross (the figures'
    per-bundle totals) are as many on a pool 4x larger with 4x the classes. Counted as
    pickles, which is how an element crosses."""
    from transforms.beam.select_parts import load_members
    from transforms.selection.parts import ClassSumAccumulator

    crossed: dict = {}

    def counting(cls):
        original = cls.__reduce_ex__

        def reduce_ex(self, protocol):
            crossed[cls.__name__] = crossed.get(cls.__name__, 0) + 1
            return original(self, protocol)

        monkeypatch.setattr(cls, "__reduce_ex__", reduce_ex)

    for cls in (MemberBlock, ClassSumAccumulator, CrossCovSum):
        counting(cls)
    held: list = []
    monkeypatch.setattr(select_module, "load_members", lambda m: held.append(len(r := load_members(m))) or r)
    counts, cap = {}, 100
    for rows, classes in ((1200, 3), (4800, 12)):
        batches, keys, x, y = _pool_batches(rows, classes=classes, seed=rows)
        directions = np.random.default_rng(rows).normal(size=(classes, DIM)) * 3  # _pool_batches' first draw
        np.save(tmp_path / f"classes{rows}.npy", directions)
        spill = str(tmp_path / f"spill{rows}")
        spec = SelectSpec(0.2, 7, "img", "txt", str(tmp_path / f"classes{rows}.npy"), cap, spill_dir=spill)
        expected = select_in_memory(
            key_hashes(keys), x.astype(np.float32), y.astype(np.float32), 0.2, 7, directions, cap
        )
        crossed.clear()
        held.clear()
        with TestPipeline() as pipeline:
            selected = pipeline | beam.Create(batches, reshuffle=False) | CovarianceSelect(spec)
            kept = selected.batches | beam.FlatMap(
                lambda b: [k for k, f in zip(b.column(KEY).to_pylist(), b.column(KEPT).to_pylist(), strict=True) if f]
            )
            assert_that(kept, equal_to([keys[i] for i in expected.kept]))
        assert crossed.get("MemberBlock", 0) == 0 and crossed.get("ClassSumAccumulator", 0) == 0, crossed
        assert max(held) <= 2 * cap < rows / classes * 2  # the greedy held a part, not a class
        counts[rows] = crossed.get("CrossCovSum", 0)
    assert 0 < counts[4800] <= counts[1200], counts
