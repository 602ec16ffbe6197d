"""CovarianceSelect: the cross-covariance selection stage, after balancing.

In: batches with the keep flag set (what balancing kept) and the image and caption
embedding columns. Out: `Selected`: the same batches, the keep flag cleared for the kept
records the selection did not pick, and the `selection` figures of stats.json. The math is
transforms.selection (pure); this module spreads it:

    members     batch -> (class, MemberBlock) of its kept records     (pseudo-class by argmax)
    class sums  CombinePerKey: exact CrossCovSum and size per class   (the card's shape, one level up)
    plan        sizes -> budgets (largest remainder) and parts per class
    group       CoGroupByKey on class of its members, its sum and its budget (the plan, keyed)
    parts       a class's members split by tie key mod parts, each part with its budget and
                the class sum; spread over workers (Reshuffle)
    greedy      each part -> the picked record ids
    mark        the picked ids, as a side input, clear the other records' keep flag
    figures     CoGroupByKey of class sums, picked sums and budgets -> per-class rows, merged
                (exact sums) into stats.json's selection

Only the mark step reads a side input: everything else reaches its grouping as a keyed
element, so no runner can group a class before its sum and budget are in (the Python
FnApiRunner with several worker processes lost a class sum when parts were keyed by a
side-input plan).

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
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import PCollection

from transforms.beam import metrics
from transforms.formats.embeddings import without_npz_embeddings
from transforms.selection.covariance import CrossCovSum
from transforms.selection.stage import (
    MemberBlock,
    SelectionPlan,
    SelectionTotals,
    SelectSpec,
    block_sum,
    class_blocks,
    class_figures,
    mark_selected,
    select_part,
    selection_document,
    split_class,
)

__all__ = ["CovarianceSelect", "Selected"]

_lock = threading.Lock()
SLIM = "slim"  # _MembersFn's second output: the batches without their npz embeddings


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
    def __init__(self, spec: SelectSpec):
        self._spec = spec
        self._members = Metrics.counter(metrics.CURATION, "records_reaching_selection")

    def setup(self):
        self._classes = _class_embeddings(self._spec.class_embeddings)

    def process(self, batch: pa.RecordBatch):
        for cls, block in class_blocks(batch, self._spec, self._classes):
            self._members.inc(len(block))
            yield cls, block
        # The batch goes on to be marked and written without its npz embeddings.
        yield beam.pvalue.TaggedOutput(SLIM, without_npz_embeddings(batch))


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
    """MemberBlocks of one class -> their exact CrossCovSum (count = size)."""

    def create_accumulator(self):
        return CrossCovSum()

    def add_input(self, accumulator, block: MemberBlock):
        return accumulator.merge(block_sum(block))

    def extract_output(self, accumulator):
        return accumulator


def _to_dict(pairs) -> dict:
    merged = {}
    for part in pairs:
        merged.update(part)
    return merged


def _class_totals(element) -> SelectionTotals:
    """(class, its pool sum, selected sum and budget) -> its row and sums, to be merged."""
    cls, grouped = element
    (pool,) = grouped["pool"]
    selected = next(iter(grouped["selected"]), None) or CrossCovSum()
    (budget, parts) = next(iter(grouped["budget"]))
    return SelectionTotals([class_figures(cls, pool, selected, budget, parts)], pool, selected)


class _MergeTotals(_Merging):
    """Every class's SelectionTotals -> stats.json's `selection` document."""

    def __init__(self, fraction: float):
        self._fraction = fraction

    def create_accumulator(self):
        return SelectionTotals()

    def add_input(self, accumulator, totals):
        return accumulator.merge(totals)

    def extract_output(self, accumulator):
        return selection_document(self._fraction, accumulator)


class _SplitClassFn(beam.DoFn):
    """(class, its members, its sum and its budget) -> ((class, part), PartWork) for each part.

    Everything a part's greedy needs travels with it: no side input feeds the grouping,
    so no runner can group before the class sums are in.
    """

    def __init__(self, max_class_size: Optional[int]):
        self._max_class_size = max_class_size

    def process(self, element):
        cls, grouped = element
        blocks, sums, budgets = list(grouped["members"]), list(grouped["class_sum"]), list(grouped["budget"])
        if len(sums) != 1 or len(budgets) != 1:
            raise ValueError(f"class {cls}: {len(sums)} class sums and {len(budgets)} budgets, one of each expected")
        members = MemberBlock.concat(blocks)
        class_sum, (budget, _parts) = sums[0], budgets[0]
        for part, work in split_class(members, class_sum, budget, self._max_class_size):
            yield (cls, part), work


class _GreedyFn(beam.DoFn):
    """((class, part), PartWork) -> (class, the picked MemberBlock)."""

    def __init__(self):
        self._selected = Metrics.counter(metrics.CURATION, "records_selected")

    def process(self, element):
        (cls, _part), work = element
        picked = select_part(work.members, work.class_matrix, work.class_size, work.budget)
        self._selected.inc(len(picked))
        yield cls, picked


class CovarianceSelect(beam.PTransform):
    """Keep round(f x N) of the N kept records that reach the stage, per pseudo-class, by the
    greedy that best preserves each class's image-caption cross-covariance (docs/selection.md).

    In: batches with `__kept`, `key`, source columns and the embedding columns of `spec`.
    Out: `Selected`. Beam metrics: "curation" records_reaching_selection, records_selected.
    """

    def __init__(self, spec: SelectSpec):
        super().__init__()
        self._spec = spec

    def expand(self, batches: PCollection[pa.RecordBatch]) -> Selected:
        spec = self._spec
        split = batches | "ClassMembers" >> beam.ParDo(_MembersFn(spec)).with_outputs(SLIM, main="members")
        members, slim = split["members"], split[SLIM]
        class_sums = members | "ClassSums" >> beam.CombinePerKey(_SumClass())
        plan = (
            class_sums
            | "ClassSizes" >> beam.Map(lambda item: {item[0]: item[1].count})
            | "AllSizes" >> beam.CombineGlobally(_to_dict)
            | "Plan" >> beam.Map(SelectionPlan.from_sizes, spec.fraction, spec.max_class_size)
        )
        # The plan goes back to each class as a keyed element, not a side input: the grouping
        # below then waits for it like for any other input.
        budgets = plan | "BudgetPerClass" >> beam.FlatMap(
            lambda plan: [(cls, (plan.budgets[cls], plan.parts[cls])) for cls in plan.sizes]
        )
        picked = (
            {"members": members, "class_sum": class_sums, "budget": budgets}
            | "GroupClasses" >> beam.CoGroupByKey()
            | "SplitClasses" >> beam.ParDo(_SplitClassFn(spec.max_class_size))
            | "SpreadParts" >> beam.Reshuffle()
            | "Greedy" >> beam.ParDo(_GreedyFn())
        )
        selected_ids = (
            picked
            | "PickedIds" >> beam.Map(lambda item: item[1].ids)
            | "AllPickedIds"
            >> beam.CombineGlobally(lambda ids: np.sort(np.concatenate([np.zeros(0, np.uint64)] + list(ids))))
        )
        marked = slim | "MarkSelected" >> beam.Map(mark_selected, beam.pvalue.AsSingleton(selected_ids))
        selected_sums = picked | "SelectedSums" >> beam.CombinePerKey(_SumClass())
        figures = (
            {"pool": class_sums, "selected": selected_sums, "budget": budgets}
            | "ClassFigures" >> beam.CoGroupByKey()
            | "ClassRows" >> beam.Map(_class_totals)
            | "SelectionFigures" >> beam.CombineGlobally(_MergeTotals(spec.fraction))
        )
        return Selected(marked, figures)
