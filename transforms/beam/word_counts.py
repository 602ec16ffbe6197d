"""CountWords: unigram and bigram counts of text lines, as a Beam PTransform.

The input of MetaCLIP's Wikipedia sources: `python -m beam_pipeline.metadata
count` runs it over a text dump and writes the count files `build` reads.
Words come from `metadata_sources.tokenize`; bigrams are adjacent words of one
line (they never span lines).
"""

from __future__ import annotations

import itertools
from collections import Counter

import apache_beam as beam
from apache_beam.pvalue import PCollection
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms.metadata.sources import tokenize

__all__ = ["CountWords"]


class _CountInBundle(beam.DoFn):
    """Per-bundle counts keyed by word tuples: (w,) for unigrams, (w1, w2) for bigrams.

    Emitting one element per word would cost more in Beam's per-element
    overhead than the counting itself, so words are counted in a Counter and
    flushed at the end of the bundle, or when it holds `max_keys` keys.
    """

    def __init__(self, max_keys: int):
        self._max_keys = max_keys

    def start_bundle(self):
        self._counts = Counter()

    def process(self, line):
        words = tokenize(line)
        self._counts.update((word,) for word in words)
        self._counts.update(itertools.pairwise(words))
        if len(self._counts) >= self._max_keys:
            yield from self._flush()

    def finish_bundle(self):
        for pair in self._flush():
            yield WindowedValue(pair, MIN_TIMESTAMP, [GlobalWindow()])

    def _flush(self):
        counts, self._counts = self._counts, Counter()
        return counts.items()


class CountWords(beam.PTransform):
    """Lines of text -> {"unigrams": (word, count), "bigrams": ((w1, w2), count)}.

    Every word is counted; bigrams seen fewer than `min_bigram_count` times
    are left out (they are most of a large corpus's distinct bigrams).
    """

    def __init__(self, min_bigram_count: int = 1, max_keys_per_bundle: int = 200_000):
        super().__init__()
        self._min_bigram_count = min_bigram_count
        self._max_keys = max_keys_per_bundle

    def expand(self, lines: PCollection[str]) -> dict:
        counts = (
            lines | "CountInBundle" >> beam.ParDo(_CountInBundle(self._max_keys)) | "Sum" >> beam.CombinePerKey(sum)
        )
        unigrams, bigrams = counts | "SplitByLength" >> beam.Partition(lambda pair, _: len(pair[0]) - 1, 2)
        min_count = self._min_bigram_count
        return {
            "unigrams": unigrams | "Unigrams" >> beam.Map(lambda pair: (pair[0][0], pair[1])),
            "bigrams": bigrams | "FrequentBigrams" >> beam.Filter(lambda pair: pair[1] >= min_count),
        }
