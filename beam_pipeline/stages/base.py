"""The stage protocol: what one stage of the curation chain is, in one class.

A stage is a step over record batches between ReadCaptions and the writers (a filter, the
balancing, a selection). Its module holds all of it:

- `add_arguments`: its flags, declared once (default, value check, help);
  `check_arguments`: the rules between its own flags (BadValue, one line);
- `used(args)`: whether the run's flags ask for it; `configure(args, inputs)`: the parsed
  flags -> the checked stage (an instance holding its spec); a bad flag or asset raises
  UsageError;
- `apply(batches, run)`: the Beam transform, batches -> `StageOutput` (the batches it hands
  on, its figures as singleton PCollections, the records it drops with their reason, which
  go to filtered/ unless it names an output of its own: `dropped_dir`);
- `write(final, output, run)`: the files it writes (from the run's final batches);
- `stats(figures, final)`: its part of stats.json, by section (`transforms.core.stats`);
- `summary_rows(stats)`: its lines of the table printed at the end.

A stage knows nothing of the stages around it: `build_curation` (curation/graph.py) runs
the configured ones in the registry's order (beam_pipeline/stages/__init__.py), and
stats.json is one merge of the run's figures and each stage's.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable, NamedTuple, Optional, Sequence

import pyarrow as pa
from apache_beam.pvalue import PCollection

from transforms.beam.sink import ShardedOutput
from transforms.formats.embeddings import EmbeddingSource
from transforms.formats.layout import InputLayout


class StageOutput(NamedTuple):
    """What a stage's transform hands on."""

    batches: PCollection  # [pa.RecordBatch]: the records it passes on (a keep flag may be cleared)
    figures: dict = {}  # name -> singleton PCollection, given back to `write` and `stats` as values
    dropped: Optional[PCollection] = None  # [pa.RecordBatch] of key, filter: records dropped, the reason
    # PCollections that are not figures, given back to its `write` (dedup's SemDeDup scores)
    outputs: dict = {}
    rejected: Optional[PCollection] = None  # [Rejection]: lines of its own files it could not use (to rejected/)


@dataclasses.dataclass(frozen=True)
class StageInputs:
    """What `configure` checks a stage's flags against: the input, read before any work."""

    layout: InputLayout
    paths: tuple[str, ...]
    seed: int
    embeddings: Optional[EmbeddingSource]  # the CLIP embeddings the run reads (None: no stage needs them)
    embedding_width: int  # d of the image embeddings (-1: a list column that does not say; 0: none)


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What a stage's transform and writers may use of the run: where things go, how the engine runs."""

    output_dir: str
    num_shards: int
    seed: int
    spill_dir: Optional[str]  # where batches wait between passes on local engines (None: in the runner)
    shards_spill_dir: Optional[str]
    local: object  # transforms.beam.match.LocalWorkers on local engines, else None
    output: Callable[..., str]  # output(*parts): a path below the output directory


class Stage:
    """One stage of the chain; subclasses say what it is (see the module docstring).

    A configured stage is an instance holding its checked spec: it is pickled into the
    pipeline with the closures that use it, so it holds small values and paths only.
    """

    name = ""  # the graph step's label (Filter, Balance, Select ...)
    main_flag = ""  # the flag that puts it in a run (--filter), named in messages
    keeps_every_record = False  # True: a run of only such stages would change nothing (refused)
    needs_balancing = False  # True: refused with --balance none, so never offered as its alternative
    worker_path_flags: Sequence[str] = ()  # its flags naming files the workers read
    embedding_keys: Sequence[str] = ()  # the CLIP embeddings it reads (--image_embedding_key ...), in order
    reasons: Sequence[str] = ()  # what it writes to filtered/'s `filter` column for a record it drops
    # The accounting's name for the records it drops or whose keep flag it clears
    # (transforms.core.accounting; "" for a stage that keeps every record).
    fate = "filtered"
    # The output its dropped records go to: filtered/ (FILTERED_SCHEMA: key, filter) unless
    # it names its own, with the schema of its rows (dedup: duplicates/, DUPLICATES_SCHEMA...).
    dropped_dir = "filtered"
    dropped_schema: Optional[pa.Schema] = None

    @classmethod
    def add_arguments(cls, group, add) -> None:
        """Declare its flags: `add(group, flag, check, **argparse kwargs)` (beam_pipeline.options)."""

    @classmethod
    def check_arguments(cls, args) -> None:
        """The rules between its own flags, on the parsed namespace; raises BadValue with one line."""

    @classmethod
    def wanted_embeddings(cls, args) -> Sequence[str]:
        """Which embeddings a run with these flags has this stage read (by the flags naming them)."""
        return ()

    @classmethod
    def used(cls, args) -> bool:
        """Whether these flags put the stage in the run (known before any file is read)."""
        raise NotImplementedError

    @classmethod
    def configure(cls, args, inputs: StageInputs) -> "Stage":
        """The checked stage for these flags (called when `used`); UsageError with one line."""
        raise NotImplementedError

    def apply(self, batches: PCollection, run: RunContext) -> StageOutput:
        raise NotImplementedError

    def subset_fields(self) -> list[pa.Field]:
        """Columns it adds to subset/ (after the input's): `texts` of --per_image."""
        return []

    def sharded_outputs(self, run: RunContext, subset_schema: pa.Schema) -> list[ShardedOutput]:
        """Sharded outputs of the final batches, written in the same shuffle as subset/ (before it)."""
        return []

    def write(self, final: PCollection, output: StageOutput, run: RunContext) -> list:
        """Its other files, from the run's final batches; the PCollections stats.json waits for."""
        return []

    def final_figures(self, batch: pa.RecordBatch) -> Counter:
        """Figures of one of the run's final batches (summed over the run, given to `stats` as `final`)."""
        return Counter()

    def stats(self, figures: dict, final: dict) -> dict:
        """Its part of stats.json: {section: {key: value}} (transforms.core.stats.STATS_SECTIONS)."""
        return {}

    def summary_rows(self, stats: dict) -> list[tuple[str, object]]:
        return []
