"""SumFigures: the run's figures (transforms.core.stats) summed over batches, exactly."""

from __future__ import annotations

from collections import Counter

import apache_beam as beam

__all__ = ["SumFigures"]


class SumFigures(beam.CombineFn):
    """Figures (Counters of integers) in, their sum as one dict out: exact, in any order of addition."""

    def create_accumulator(self):
        return Counter()

    def add_input(self, accumulator, figures):
        accumulator.update(figures)
        return accumulator

    def merge_accumulators(self, accumulators):
        total = Counter()
        for accumulator in accumulators:
            total.update(accumulator)
        return total

    def extract_output(self, accumulator):
        return dict(accumulator)
