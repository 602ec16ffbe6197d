"""CovarianceSelect: the cross-covariance selection stage, after balancing.

In: batches with the keep flag set (what balancing kept) and the image and caption
embedding columns. Out: `Selected`: the same batches, the keep flag cleared for the kept
records the selection did not pick, and the `selection` figures of stats.json. The math is
transforms.selection (pure); this module spreads it so that no element is large and no
worker holds more than one part (about --max_class_size members):

    members      batch -> (class, MemberBlock) of its kept records     (pseudo-class by argmax)
    plan         block sizes -> class sizes -> budgets and parts per class (small)
    split        each block -> ((class, part), block) by tie key mod parts, where it is made
                 (the plan, a few bytes per class, is the side input); on local engines the
                 blocks go to spill files and only their names cross the shuffle
    class sums   exact CrossCovSum per class (4.7 MB at d = 768): with spill files, a
                 GroupByKey of the class's BlockRefs, summed on one worker from the files and
                 written to one (SumRef); without, a CombinePerKey of the blocks
    targets      CoGroupByKey on class of its sum, budget and part sizes -> ((class, part),
                 PartTarget): the class matrix (or its SumRef), n_c and the part's budget
    greedy       CoGroupByKey on (class, part) of its blocks and its target -> the part's
                 picked sum (a SumRef with spill files) and its picked ids by input file
    mark         the picked ids, per input file (a multimap side input: each batch looks up
                 its own files), clear the other records' keep flag
    figures      CoGroupByKey of class sums, picked sums and budgets -> per-class scalars and
                 one pool and one picked sum per bundle -> stats.json's selection

With spill files (local engines) no d x d sum crosses a stage but the figures' per-bundle
totals: the runner holds what crosses in the launcher's memory (select_parts).

Every grouping that must see one of something checks it, and fails the run with the
class named rather than select from less (docs/beam-notes.md: the lost class sum).
A class's picks depend only on its members (exact integer class sums, members sorted by
tie key), never on files, batches, workers or runner.
"""

from __future__ import annotations

import functools
import threading
from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsMultiMap, AsSingleton, PCollection

from transforms.beam import metrics
from transforms.beam.select_parts import (
    BlockRef,
    BlockSpill,
    load_members,
    load_sum,
    mark_progress,
    member_rows,
    read_block,
    spill_sum,
    split_member,
    sum_blocks,
)
from transforms.beam.spill import LoadBatches, StoreBatches, _in_global_window
from transforms.core.columns import KEPT
from transforms.formats.embeddings import without_npz_embeddings
from transforms.selection.covariance import CrossCovSum
from transforms.selection.parts import ClassSumAccumulator, ids_by_file, part_targets
from transforms.selection.stage import (
    ROW_BITS,
    SelectionPlan,
    SelectionTotals,
    SelectSpec,
    block_sum,
    class_blocks,
    class_figures,
    mark_selected,
    record_ids,
    select_part,
    selection_document,
)

__all__ = ["CovarianceSelect", "Selected"]

_lock = threading.Lock()
SLIM = "slim"  # _MembersFn's second output: the batches without their npz embeddings
PICKED_IDS = "picked_ids"  # _GreedyFn's second output: (input file, its picked record ids)


@functools.lru_cache(maxsize=2)
def _class_embeddings(path: Optional[str]) -> Optional[np.ndarray]:
    """The K x d class embeddings of `path`, read once per worker process."""
    if path is None:
        return None
    with _lock, FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return np.load(handle, allow_pickle=False)


class Selected(NamedTuple):
    """What the selection stage hands on."""

    batches: PCollection  # [pa.RecordBatch]: keep flag = balanced and selected
    figures: PCollection  # singleton dict: stats.json's `selection`


class _MembersFn(beam.DoFn):
    """Batch -> (class, MemberBlock), or (class, BlockRef) with a spill directory; SLIM: the batch
    without its npz embeddings."""

    def __init__(self, spec: SelectSpec):
        self._spec = spec
        self._members = Metrics.counter(metrics.CURATION, "records_reaching_selection")

    def setup(self):
        self._classes = _class_embeddings(self._spec.class_embeddings)

    def start_bundle(self):
        spill = self._spec.spill_dir
        self._spill = BlockSpill(FileSystems.join(spill, "members")) if spill else None

    def process(self, batch: pa.RecordBatch):
        for cls, block in class_blocks(batch, self._spec, self._classes):
            self._members.inc(len(block))
            if self._spill is None:
                yield cls, block
            else:
                yield from self._spill.add(cls, block)
        # The batch goes on to be marked and written without its npz embeddings.
        yield beam.pvalue.TaggedOutput(SLIM, without_npz_embeddings(batch))

    def finish_bundle(self):
        if self._spill is not None:
            for item in self._spill.flush():
                yield _in_global_window(item)


class _Merging(beam.CombineFn):
    """A CombineFn over accumulators that merge in place (`merge(other) -> self`), exactly:
    subclasses say what an empty one is, how an input becomes one, and what comes out."""

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        total = next(accumulators)
        for other in accumulators:
            total.merge(other)
        return total


class _SumClass(_Merging):
    """MemberBlocks (or BlockRefs) of one class -> their exact CrossCovSum (count = size).

    The accumulator holds a bundle's few rows of a class as rows, not as a d x d sum
    (parts.ClassSumAccumulator): what crosses the shuffle never exceeds the members.
    """

    def create_accumulator(self):
        return ClassSumAccumulator()

    def add_input(self, accumulator, block):
        block = read_block(block) if isinstance(block, BlockRef) else block
        return accumulator.add(block.x, block.y)

    def extract_output(self, accumulator):
        return accumulator.result()


def _to_dict(pairs) -> dict:
    merged = {}
    for part in pairs:
        merged.update(part)
    return merged


def _one(cls, grouped: dict, name: str):
    """The single value of `name` in a CoGroupByKey result; anything else fails the run."""
    values = list(grouped[name])
    if len(values) != 1:
        raise ValueError(f"selection of class {cls}: {len(values)} {name} values where one was expected")
    return values[0]


def _class_totals(spill_dir: Optional[str]):
    """(class, its pool sum, its parts' picked sums and its budget) -> (its row of figures, its
    pool sum, its picked sum), the sums as SumRefs with a spill directory, to be merged."""

    def class_totals(element) -> tuple:
        cls, grouped = element
        pool_sum = _one(cls, grouped, "pool")
        pool = load_sum(pool_sum)
        selected = CrossCovSum()
        for part_sum in grouped["selected"]:  # one per part with members
            selected.merge(load_sum(part_sum))
        budget, parts = _one(cls, grouped, "budget")
        if selected.count != budget:
            raise ValueError(f"selection of class {cls}: the picked sums hold {selected.count} picks of its {budget}")
        row = class_figures(cls, pool, selected, budget, parts)
        return row, pool_sum, spill_sum(spill_dir, "SelectClassPicked", selected)

    return class_totals


def _check_marked(document: dict, kept: int) -> dict:
    """The figures, once the batches marked hold exactly the records the figures count as selected."""
    if kept != document["records_selected"]:
        raise ValueError(f"selection: {kept} records marked selected, {document['records_selected']} picked")
    return document


class _MergeTotals(_Merging):
    """Every class's (row, pool sum, picked sum) -> stats.json's `selection` document; the
    accumulator holds one pool and one picked sum, read from spill files one class at a time."""

    def __init__(self, fraction: float):
        self._fraction = fraction

    def create_accumulator(self):
        return SelectionTotals()

    def add_input(self, accumulator, totals):
        row, pool, selected = totals
        return accumulator.merge(SelectionTotals([row], load_sum(pool), load_sum(selected)))

    def extract_output(self, accumulator):
        return selection_document(self._fraction, accumulator)


class _SplitPartsFn(beam.DoFn):
    """(class, MemberBlock), the plan -> ((class, part), MemberBlock) for each part in the block.

    The plan is a side input: Beam computes it whole before this step starts, and a class
    it lacks fails the run (KeyError), so no block is ever keyed by a partial plan.
    """

    def __init__(self, max_class_size: Optional[int]):
        self._max_class_size = max_class_size

    def process(self, element, plan: SelectionPlan):
        cls, member = element
        for part, piece in split_member(member, plan.sizes[cls], self._max_class_size):
            yield (cls, part), piece


def _targets(element):
    """(class, its sum, budget and part sizes) -> ((class, part), PartTarget) per non-empty part."""
    cls, grouped = element
    class_sum = _one(cls, grouped, "class_sum")
    budget, parts = _one(cls, grouped, "budget")
    sizes: dict = {}
    for part, n in grouped["part_sizes"]:
        sizes[part] = sizes.get(part, 0) + n
    matrix = class_sum.matrix() if isinstance(class_sum, CrossCovSum) else class_sum  # or its SumRef
    for part, target in part_targets(class_sum.count, matrix, budget, parts, sizes):
        yield (cls, part), target


def _spilled_class_sum(spill_dir: str):
    """(class, its BlockRefs) -> (class, SumRef): the class sum made from the files on one worker."""

    def class_sum(element):
        cls, refs = element
        return cls, spill_sum(spill_dir, "SelectClassSum", sum_blocks(refs))

    return class_sum


class _GreedyFn(beam.DoFn):
    """((class, part), its blocks and PartTarget) -> (class, the part's picked CrossCovSum, or
    its SumRef with a spill directory); PICKED_IDS: (input file, the part's picked ids in it)."""

    def __init__(self, spill_dir: Optional[str] = None):
        self._spill_dir = spill_dir
        self._selected = Metrics.counter(metrics.CURATION, "records_selected")
        self._parts = Metrics.counter(metrics.CURATION, "selection_parts_done")

    def process(self, element):
        (cls, part), grouped = element
        target = _one(f"{cls} part {part}", grouped, "target")
        members = load_members(list(grouped["members"]))
        if len(members) != target.part_size:
            raise ValueError(
                f"selection of class {cls} part {part}: {len(members)} members arrived of {target.part_size}"
            )
        matrix = target.class_matrix
        matrix = matrix if isinstance(matrix, np.ndarray) else load_sum(matrix).matrix()
        picked = select_part(members, matrix, target.class_size, target.budget)
        self._selected.inc(len(picked))
        self._parts.inc()
        mark_progress(self._spill_dir, "SelectPartsDone", 1)
        for file_ids in ids_by_file(picked.ids):
            yield beam.pvalue.TaggedOutput(PICKED_IDS, file_ids)
        # The picked members stay here: what goes on is their exact sum (for the figures).
        yield (
            cls,
            spill_sum(
                self._spill_dir and FileSystems.join(self._spill_dir, "sums"), "SelectPickedSum", block_sum(picked)
            ),
        )


class _MarkFn(beam.DoFn):
    """A batch, the picked ids by input file -> the batch with the unpicked records' keep flag cleared."""

    def process(self, batch: pa.RecordBatch, picked_by_file):
        if batch.num_rows == 0:
            yield batch
            return
        files = np.unique(record_ids(batch) >> np.uint64(ROW_BITS)).tolist()
        chunks = [ids for f in files for ids in picked_by_file[int(f)]]
        yield mark_selected(batch, np.concatenate([np.zeros(0, np.uint64)] + chunks))


def _kept_rows(batch: pa.RecordBatch) -> int:
    return int(pc.sum(batch.column(KEPT)).as_py() or 0) if batch.num_rows else 0


class CovarianceSelect(beam.PTransform):
    """Keep round(f x N) of the N kept records that reach the stage, per pseudo-class, by the
    greedy that best preserves each class's image-caption cross-covariance (docs/selection.md).

    In: batches with `__kept`, `key`, source columns and the embedding columns of `spec`.
    Out: `Selected`. Beam metrics: "curation" records_reaching_selection, records_selected,
    selection_parts_done.
    """

    def __init__(self, spec: SelectSpec):
        super().__init__()
        self._spec = spec

    def expand(self, batches: PCollection[pa.RecordBatch]) -> Selected:
        spec = self._spec
        spill = spec.spill_dir
        split = batches | "ClassMembers" >> beam.ParDo(_MembersFn(spec)).with_outputs(SLIM, main="members")
        members, slim = split["members"], split[SLIM]
        class_sizes = (
            members
            | "BlockSizes" >> beam.Map(lambda item: (item[0], member_rows(item[1])))
            | "ClassSizes" >> beam.CombinePerKey(sum)
        )
        plan = (
            class_sizes
            | "SizesAsDict" >> beam.Map(lambda item: {item[0]: item[1]})
            | "AllSizes" >> beam.CombineGlobally(_to_dict)
            | "Plan" >> beam.Map(SelectionPlan.from_sizes, spec.fraction, spec.max_class_size)
        )
        _ = plan | "CountParts" >> beam.Map(lambda plan: mark_progress(spill, "SelectParts", sum(plan.parts.values())))
        budgets = plan | "BudgetPerClass" >> beam.FlatMap(
            lambda plan: [(cls, (plan.budgets[cls], plan.parts[cls])) for cls in plan.sizes]
        )
        parts = members | "SplitParts" >> beam.ParDo(_SplitPartsFn(spec.max_class_size), AsSingleton(plan))
        part_sizes = parts | "PartSizes" >> beam.Map(lambda item: (item[0][0], (item[0][1], member_rows(item[1]))))
        if spill:
            class_sums = (
                members
                | "GroupClassBlocks" >> beam.GroupByKey()
                | "ClassSums" >> beam.Map(_spilled_class_sum(FileSystems.join(spill, "sums")))
            )
        else:
            class_sums = members | "ClassSums" >> beam.CombinePerKey(_SumClass())
        targets = (
            {"class_sum": class_sums, "budget": budgets, "part_sizes": part_sizes}
            | "GroupClassTargets" >> beam.CoGroupByKey()
            | "PartTargets" >> beam.FlatMap(_targets)
        )
        greedy = (
            {"members": parts, "target": targets}
            | "GroupParts" >> beam.CoGroupByKey()
            | "Greedy" >> beam.ParDo(_GreedyFn(spill)).with_outputs(PICKED_IDS, main="sums")
        )
        selected_sums, picked_by_file = greedy["sums"], greedy[PICKED_IDS]
        marked = (
            slim
            | "StoreSlim" >> StoreBatches(spill and FileSystems.join(spill, "slim"), "SelectRead")
            | "LoadSlim" >> LoadBatches(spill)
            | "MarkSelected" >> beam.ParDo(_MarkFn(), AsMultiMap(picked_by_file))
        )
        marked_count = marked | "MarkedRows" >> beam.Map(_kept_rows) | "AllMarkedRows" >> beam.CombineGlobally(sum)
        figures = (
            {"pool": class_sums, "selected": selected_sums, "budget": budgets}
            | "ClassFigures" >> beam.CoGroupByKey()
            | "ClassRows" >> beam.Map(_class_totals(spill and FileSystems.join(spill, "sums")))
            | "SelectionFigures" >> beam.CombineGlobally(_MergeTotals(spec.fraction))
            | "CheckMarked" >> beam.Map(_check_marked, AsSingleton(marked_count))
        )
        return Selected(marked, figures)
