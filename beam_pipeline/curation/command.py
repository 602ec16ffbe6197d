"""A curation run from its command line: check, build the pipeline, run it, summarise.

Every check of options, inputs and metadata happens before the pipeline is
built; a failed check prints one line and exits with status 2. The command
itself is beam_pipeline.curate.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from typing import Optional, Sequence

import apache_beam as beam

from beam_pipeline.curation import runners, worker_failure
from beam_pipeline.curation.config import CurationConfig, prepare
from beam_pipeline.curation.graph import build_curation
from beam_pipeline.curation.outputs import clear_outputs
from beam_pipeline.curation.pipeline_options import CachedViewsOptions
from beam_pipeline.curation.runners import forks_local_workers, make_runner, one_blas_thread_per_worker, runs_here
from beam_pipeline.curation.summary import print_summary
from beam_pipeline.launcher import prebuild, warm_workers
from beam_pipeline.options import CurationArgs, UsageError, parse_curation_args
from beam_pipeline.progress import ProgressReporter
from beam_pipeline.stages.balance import MetaClipBalancing
from transforms.beam.modes import MetaClip1
from transforms.core.accounting import accounting_failure
from transforms.formats.rejections import strict_failure
from transforms.runtime import automaton_cache


@contextlib.contextmanager
def _quiet_beam_errors(quiet: bool):
    logger = logging.getLogger("apache_beam")
    level = logger.level
    if quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _prebuild_automaton(
    config: CurationConfig, argv: Sequence[str], early: Optional[prebuild.Prebuild]
) -> Optional[prebuild.Prebuild]:
    """Local metaclip1 runs with a cache: build the automaton while the run starts (beam_pipeline.launcher.prebuild).

    `early`: the child the command started for this run's --metadata before its
    imports; told where to write, or cancelled when there is nothing to build here.
    """
    balancing, local = config.stage(MetaClipBalancing), config.local
    mode = balancing.mode if balancing is not None else None
    wanted = (
        local is not None
        and bool(local.cache_dir)
        and isinstance(mode, MetaClip1)
        and not os.path.exists(automaton_cache.cache_path(local.cache_dir, mode.metadata_sha256, mode.matcher))
    )
    if early is not None and not (wanted and early.metadata_path == mode.metadata_path):
        early.cancel()
        early = None
    if not wanted:
        return None
    # The checked list and matcher appended: the child reads the last of each.
    child = early or prebuild.start([*argv, "--metadata", mode.metadata_path, "--matcher", mode.matcher])
    if child is not None:
        child.go(local.cache_dir, mode.metadata_sha256, mode.matcher)
    return child


def run_curation(argv: Sequence[str], early: Optional[prebuild.Prebuild] = None) -> int:
    """Run a curation from command-line arguments; return the exit status.

    `early`: an automaton build started for this command line (prebuild.start).
    """
    argv = list(argv)
    try:
        args, _ = parse_curation_args(argv)
        # The whole command line: Beam carries the curation options to the workers too.
        options = CachedViewsOptions(argv)
    except UsageError as error:
        return _refused(error, early)
    # Forked here, with Beam and the pipeline's modules imported and no thread started.
    warm = warm_workers.start() if forks_local_workers(options) else None
    try:
        return _run_checked(args, options, argv, early, warm)
    finally:
        if warm is not None:
            warm.close()


def _refused(error: UsageError, early: Optional[prebuild.Prebuild]) -> int:
    if early is not None:
        early.cancel()
    print(f"error: {error}", file=sys.stderr)
    return 2


def _run_checked(
    args: CurationArgs,
    options: CachedViewsOptions,
    argv: Sequence[str],
    early: Optional[prebuild.Prebuild],
    warm: Optional[warm_workers.WarmWorkers],
) -> int:
    """The run once its options parsed: the checks, then the pipeline (on the warm workers, if any)."""
    try:
        config = prepare(args, options)
    except UsageError as error:
        return _refused(error, early)
    clear_outputs(config.output_dir, config.reshard_dir)
    one_blas_thread_per_worker(options)
    started, oom_before = time.monotonic(), worker_failure.oom_kills()
    builder = _prebuild_automaton(config, argv, early)
    try:
        runner = make_runner(options, worker_command=None if warm is None else warm.command)
        pipeline = beam.Pipeline(runner=runner, options=options)
        build_curation(pipeline, config)
        # Beam logs a failing step's traceback before raising; a --strict stop is
        # a finding about the data, told in one line below.
        progress = (
            ProgressReporter(config.spill_dir, args.progress, balancing=config.stage(MetaClipBalancing) is not None)
            if config.spill_dir
            else contextlib.nullcontext()
        )
        with (
            _quiet_beam_errors(config.strict),
            progress,
            runners.quiet_sdist_build(options),
            worker_failure.abort_on_worker_death(warm),
        ):
            result = pipeline.run()
            if not runs_here(options):
                # Dataflow: the job runs on in the service, without this process.
                print(runners.submitted_line(options, config.output_dir))
                return 0
            result.wait_until_finish()
    except (Exception, worker_failure.WorkerDied) as error:  # --strict, records unaccounted for, a dead worker
        message = (strict_failure(error) if config.strict else None) or accounting_failure(error)
        if message is None:
            message = worker_failure.message(error, _worker_deaths(warm, error), oom_before, worker_failure.oom_kills())
            if message is None:
                raise
            traceback.print_exc()  # the full story above the one line
            worker_failure.end_quietly(warm)
            print(f"error: {message}", file=sys.stderr)
            return worker_failure.EXIT_STATUS
        print(f"error: {message}", file=sys.stderr)
        return 1
    finally:
        if builder is not None:
            builder.wait()  # long done when the workers needed its file
    print_summary(config, time.monotonic() - started)
    return 0


def _worker_deaths(warm: Optional[warm_workers.WarmWorkers], error: Exception) -> list[tuple[int, int]]:
    """The workers the warm process saw die; waited for a moment when Beam says it lost one."""
    if warm is None:
        return []
    return warm.deaths(wait_seconds=2.0 if worker_failure.looks_like_a_lost_worker(error) else 0.2)
