"""SumFigures: the run's figures (transforms.core.stats) summed over batches, exactly."""

from __future__ import annotations

from collections import Counter

import apache_beam as beam


class SumFigures(beam.CombineFn):
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
