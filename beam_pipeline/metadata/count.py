"""`count`: unigram and bigram counts of text files with Beam, the count files `build` reads."""

from __future__ import annotations

import os
from typing import Sequence

from beam_pipeline.metadata.files import UsageError, match_paths
from transforms.metadata.sources import (
    count_line,
)


def _check_beam_args(beam_args: Sequence[str]) -> None:
    from beam_pipeline.options import beam_option_names

    known = beam_option_names()
    for arg in beam_args:
        flag = arg.split("=", 1)[0]
        if arg.startswith("--") and flag not in known:
            raise UsageError(f"unrecognised option {flag}")


def _clear_outputs(output_dir: str, overwrite: bool) -> None:
    """Old shards would be read with the new ones by a glob: refuse or remove them."""
    from apache_beam.io.filesystems import FileSystems

    old = [
        m.path
        for name in ("unigrams", "bigrams")
        for m in FileSystems.match([FileSystems.join(output_dir, f"{name}-*")])[0].metadata_list
    ]
    if old and not overwrite:
        raise UsageError(
            f"--output_dir {output_dir} already holds count files ({os.path.basename(old[0])} ...); "
            "pass --overwrite to replace them"
        )
    if old:
        FileSystems.delete(old)


def count_command(args, beam_args) -> int:
    _check_beam_args(beam_args)
    for pattern in args.input:
        match_paths(pattern, "--input")
    if "://" not in args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    _clear_outputs(args.output_dir, args.overwrite)

    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipeline.curation.runners import make_runner

    options = PipelineOptions(list(beam_args))
    pipeline = beam.Pipeline(runner=make_runner(options), options=options)
    build_counts_pipeline(pipeline, args.input, args.output_dir, args.min_bigram_count, args.num_shards)
    pipeline.run().wait_until_finish()
    unigrams, bigrams = (FileSystems.join(args.output_dir, f"{name}-*.txt") for name in ("unigrams", "bigrams"))
    print(f"wrote {unigrams} and {bigrams}")
    print(
        f"next: python -m beam_pipeline.metadata build --wiki_unigrams '{unigrams}' --wiki_bigrams '{bigrams}' "
        "--output metadata.json"
    )
    return 0


def build_counts_pipeline(
    pipeline, inputs: Sequence[str], output_dir: str, min_bigram_count: int = 1, num_shards: int = 0
) -> None:
    """Add to `pipeline`: read `inputs`, count, write unigrams-*.txt and bigrams-*.txt."""
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems

    from transforms.beam.word_counts import CountWords

    lines = [pipeline | f"Read{i}" >> beam.io.ReadFromText(pattern) for i, pattern in enumerate(inputs)]
    counts = lines | "AllLines" >> beam.Flatten() | "CountWords" >> CountWords(min_bigram_count)
    for name, to_words in (("unigrams", lambda word: (word,)), ("bigrams", lambda pair: pair)):
        (
            counts[name]
            | f"Format{name}" >> beam.MapTuple(lambda key, count, to_words=to_words: count_line(to_words(key), count))
            | f"Write{name}"
            >> beam.io.WriteToText(FileSystems.join(output_dir, name), file_name_suffix=".txt", num_shards=num_shards)
        )
