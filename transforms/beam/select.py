"""CovarianceSelect: the cross-covariance selection stage, after balancing.

In: batches with the keep flag set (what balancing kept) and the image and caption
embedding columns. Out: `Selected`: the same batches, the keep flag cleared for the kept
records the selection did not pick, and the `selection` figures of stats.json. The math is
transforms.selection (pure); this module spreads it:

    members     batch -> (class, MemberBlock) of its kept records     (pseudo-class by argmax)
    class sums  CombinePerKey: exact CrossCovSum and size per class   (the card's shape, one level up)
    plan        sizes -> budgets (largest remainder) and parts per class
    parts       (class, part) <- tie key mod parts; part sizes summed
    greedy      CoGroupByKey of a part's members with its class sum -> the picked record ids
    mark        the picked ids, as a side input, clear the other records' keep flag

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
from transforms.selection.stage import (
    ClassFigures,
    MemberBlock,
    SelectionPlan,
    SelectSpec,
    block_sum,
    class_blocks,
    mark_selected,
    select_part,
    selection_document,
)

__all__ = ["CovarianceSelect", "Selected"]

_lock = threading.Lock()


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


class _SumClass(beam.CombineFn):
    """MemberBlocks of one class -> their exact CrossCovSum (count = size)."""

    def create_accumulator(self):
        return ClassFigures().pool

    def add_input(self, accumulator, block: MemberBlock):
        return accumulator.merge(block_sum(block))

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        total = next(accumulators)
        for other in accumulators:
            total.merge(other)
        return total

    def extract_output(self, accumulator):
        return accumulator


def _to_dict(pairs) -> dict:
    merged = {}
    for part in pairs:
        merged.update(part)
    return merged


class _GreedyFn(beam.DoFn):
    """((class, part), members and class sum) -> the picked MemberBlock, keyed by class."""

    def __init__(self):
        self._selected = Metrics.counter(metrics.CURATION, "records_selected")

    def process(self, element, plan: SelectionPlan, part_sizes: dict):
        (cls, part), grouped = element
        blocks, sums = list(grouped["members"]), list(grouped["class_sum"])
        if not blocks:
            return
        members = MemberBlock.concat(blocks)
        class_sum = sums[0]
        budget = plan.part_budget(cls, part, part_sizes)
        picked = select_part(members, class_sum.matrix(), class_sum.count, budget)
        self._selected.inc(len(picked))
        yield cls, picked


class CovarianceSelect(beam.PTransform):
    """Keep round(f x N) of the N kept records that reach the stage, per pseudo-class, by the
    greedy that best preserves each class's image-caption cross-covariance (selection-spec.md 3).

    In: batches with `__kept`, `key`, source columns and the embedding columns of `spec`.
    Out: `Selected`. Beam metrics: "curation" records_reaching_selection, records_selected.
    """

    def __init__(self, spec: SelectSpec):
        super().__init__()
        self._spec = spec

    def expand(self, batches: PCollection[pa.RecordBatch]) -> Selected:
        spec = self._spec
        members = batches | "ClassMembers" >> beam.ParDo(_MembersFn(spec))
        class_sums = members | "ClassSums" >> beam.CombinePerKey(_SumClass())
        plan = (
            class_sums
            | "ClassSizes" >> beam.Map(lambda item: {item[0]: item[1].count})
            | "AllSizes" >> beam.CombineGlobally(_to_dict)
            | "Plan" >> beam.Map(SelectionPlan.from_sizes, spec.fraction, spec.max_class_size)
        )
        plan_side = beam.pvalue.AsSingleton(plan)

        def into_parts(item, plan):
            cls, block = item
            parts = plan.part_of(cls, block.ties)
            for part in np.unique(parts).tolist():
                yield (cls, part), block.take(np.flatnonzero(parts == part))

        routed = members | "IntoParts" >> beam.FlatMap(into_parts, plan_side)
        part_sizes = (
            routed
            | "PartSizes" >> beam.Map(lambda item: (item[0], len(item[1])))
            | "SumPartSizes" >> beam.CombinePerKey(sum)
            | "PartSizesAsDict" >> beam.Map(lambda item: {item[0]: item[1]})
            | "AllPartSizes" >> beam.CombineGlobally(_to_dict)
        )
        sums_per_part = class_sums | "SumPerPart" >> beam.FlatMap(
            lambda item, plan: [((item[0], part), item[1]) for part in range(plan.parts[item[0]])], plan_side
        )
        picked = (
            {"members": routed, "class_sum": sums_per_part}
            | "PartWithClassSum" >> beam.CoGroupByKey()
            | "Greedy" >> beam.ParDo(_GreedyFn(), plan_side, beam.pvalue.AsSingleton(part_sizes))
        )
        selected_ids = (
            picked
            | "PickedIds" >> beam.Map(lambda item: item[1].ids)
            | "AllPickedIds"
            >> beam.CombineGlobally(lambda ids: np.sort(np.concatenate([np.zeros(0, np.uint64)] + list(ids))))
        )
        marked = batches | "MarkSelected" >> beam.Map(mark_selected, beam.pvalue.AsSingleton(selected_ids))
        selected_sums = (
            picked
            | "PickedSums" >> beam.Map(lambda item: (item[0], item[1]))
            | "SelectedSums" >> beam.CombinePerKey(_SumClass())
        )
        figures = (
            {"pool": class_sums, "selected": selected_sums}
            | "ClassFigures" >> beam.CoGroupByKey()
            | "FiguresAsDict"
            >> beam.Map(
                lambda item: {
                    item[0]: ClassFigures(
                        next(iter(item[1]["pool"])), next(iter(item[1]["selected"]), ClassFigures().selected)
                    )
                }
            )
            | "AllClassFigures" >> beam.CombineGlobally(_to_dict)
            | "SelectionDocument"
            >> beam.Map(lambda figures, plan: selection_document(spec.fraction, plan, figures), plan_side)
        )
        return Selected(marked, figures)
