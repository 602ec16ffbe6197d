"""Which runner a run uses, and what that means for it (waiting, spilling between passes)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from typing import Iterator, Optional

from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
)


def runner_name(options: PipelineOptions) -> str:
    """The runner as Beam resolves --runner: class name, lower case, no 'runner' suffix ('direct', 'dataflow')."""
    name = (options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1].lower()
    return name[: -len("runner")] if name.endswith("runner") else name


def make_runner(options: PipelineOptions, worker_command: Optional[str] = None) -> Optional[object]:
    """The DirectRunner's own engine, the Python FnApiRunner, chosen explicitly.

    Left to itself the DirectRunner first tries to download a Prism binary
    (docs/environment-facts.md, Runners),
    which waits on the network where there is none; every other runner is
    used as given (None: Beam picks it from --runner). As the DirectRunner does,
    the runner hands the pipeline options to the SDK worker processes of
    --direct_running_mode=multi_processing (filesystem settings such as
    --s3_endpoint_url, the pickler). `worker_command`: the shell command that
    starts each SDK worker of multi_processing in place of Beam's
    (beam_pipeline.launcher.warm_workers).
    """
    untimed_engine_streams()
    if runner_name(options) == "direct":
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        encoded = JobServiceHandle.encode_pipeline_options(_options_workers_parse(options))
        _drop_beam_worker_warning()
        provision_info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        if worker_command is None:
            return fn_runner.FnApiRunner(provision_info=provision_info)
        return _worker_command_runner(fn_runner.FnApiRunner, worker_command)(provision_info=provision_info)
    return None


def untimed_engine_streams() -> None:
    """Beam's local engine sends each stage input to a worker in one piece, not time-flushed.

    Beam 2.77's FnApiRunner writes a stage's input to an SDK worker through a stream that a
    timer thread flushes every second (worker_handlers.DATA_BUFFER_TIME_LIMIT_MS). Its flush
    sends the buffer and then clears it without a lock, so whatever the runner writes while
    a send waits (a full queue on a loaded machine) is cleared unsent: whole elements are
    lost, without an error (docs/beam-notes.md: the lost class sum). It also let hundreds of
    MB reach a worker as several messages, which deadlocked the data plane. With no time
    limit the stream is flushed once, when the runner closes it, by the thread that wrote
    it. It applies to the engines of this process (DirectRunner, PortableRunner embed); an
    input over gRPC's 2 GB then fails with Beam's own error instead of being cut.
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def _options_workers_parse(options: PipelineOptions) -> dict:
    """The options for the SDK workers: those Beam's own options classes parse back.

    A worker parses them before it imports this pipeline's modules, so it knows none
    of the curation flags (which its DoFns do not read: they carry their config), and
    Beam writes a True boolean as `--NAME`, which no parser knows when NAME is the dest
    of a `--no_NAME` flag (pipeline_type_check, direct_runner_use_stacked_bundle, True
    by default). Each worker logged "Discarding unparseable args" for them and went on
    without them, which is what leaving them out gives.
    """
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        if cls.__module__.startswith("apache_beam."):
            cls._add_argparse_args(parser)
    known = {flag for action in parser._actions for flag in action.option_strings}
    return {name: value for name, value in options.get_all_options().items() if f"--{name}" in known or value is False}


class _NoMainSessionWarning(logging.Filter):
    """Drops, from the workers' log as the launcher relays it, Beam's warning that a worker has no
    staged main session (`No semi_persistent_directory found`, sdk_worker_main): a local
    worker never has one, and this pipeline pickles no __main__ state for it to load."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == "Worker: %s"
            and bool(record.args)
            and 'message: "No semi_persistent_directory found:' in str(record.args[0])
        )


def _drop_beam_worker_warning() -> None:
    logger = logging.getLogger("apache_beam.runners.portability.local_job_service")
    if not any(isinstance(existing, _NoMainSessionWarning) for existing in logger.filters):
        logger.addFilter(_NoMainSessionWarning())


def forks_local_workers(options: PipelineOptions) -> bool:
    """Whether the run starts SDK worker processes on this machine: the DirectRunner's multi_processing."""
    return runner_name(options) == "direct" and options.view_as(DirectOptions).direct_running_mode == "multi_processing"


def _worker_command_runner(base: type, command: str) -> type:
    """The FnApiRunner, with `command` as the multi_processing workers' command line.

    FnApiRunner.run_pipeline sets its default environment to Beam's own worker
    command whenever the options say multi_processing, after any given to its
    constructor; this class keeps a subprocess environment with `command`
    whatever is assigned.
    """
    from apache_beam.transforms import environments

    environment = environments.SubprocessSDKEnvironment.from_command_string(command_string=command)

    class WorkerCommandRunner(base):
        @property
        def _default_environment(self):
            return environment

        @_default_environment.setter
        def _default_environment(self, _value):
            pass

    return WorkerCommandRunner


def runs_here(options: PipelineOptions) -> bool:
    """Whether the job needs this process until it ends: on every runner but Dataflow.

    A Dataflow job (a Flex Template launch included) runs on in the service.
    Everywhere else the submitter must wait: the DirectRunner and an embedded
    job service run the job here, a LOOPBACK environment runs the SDK workers
    here, and FlinkRunner, SparkRunner and PrismRunner start their job server
    as a child of this process; all of them end when it exits.
    """
    return runner_name(options) not in ("dataflow", "testdataflow")


def submitted_line(options: PipelineOptions, output_dir: str) -> str:
    """What a run that does not wait says once pipeline.run() returns (a dry run submits nothing)."""
    runner = options.view_as(StandardOptions).runner
    if options.get_all_options().get("dry_run"):
        return f"dry run: the job was translated for {runner}; nothing was submitted"
    return f"submitted to {runner}; stats.json in {output_dir} marks its end"


@contextlib.contextmanager
def quiet_sdist_build(options: PipelineOptions) -> Iterator[None]:
    """Beam's stager builds --setup_file's sdist with `python -m build`, then, failing that
    (`build` is not a requirement), `python setup.py sdist`; the children's stderr went to the
    terminal (`No module named build`) though the fallback works. Here it joins their stdout,
    which Beam captures and shows only in the error of a build that fails. Only while a run
    with --setup_file is submitted."""
    from apache_beam.utils import processes

    if options.view_as(SetupOptions).setup_file is None:
        yield
        return
    check_output = processes.check_output

    def with_stderr(*args, **kwargs):
        kwargs.setdefault("stderr", subprocess.STDOUT)
        return check_output(*args, **kwargs)

    processes.check_output = with_stderr
    try:
        yield
    finally:
        processes.check_output = check_output


def spills(options: PipelineOptions) -> bool:
    """Whether the engine keeps a PCollection in memory between stages.

    True for Beam's Python FnApiRunner: the DirectRunner's engine and the
    embedded portable job service. Dataflow, Flink and Spark materialise
    between stages themselves.
    """
    name = runner_name(options)
    if name == "direct":
        return True
    return name == "portable" and options.view_as(PortableOptions).job_endpoint == "embed"


# The BLAS thread pools of numpy's OpenBLAS (and of MKL or OpenMP builds).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread_per_worker(options: PipelineOptions) -> None:
    """Local worker processes (one per core) get one BLAS thread each, unless the user chose.

    Each SDK worker would otherwise start a BLAS thread per core: the selection's greedy
    (two mat-vecs a pick, memory bound) ran 1.9x slower with 2 workers x 2 threads on 2
    cores than with one thread each (docs/selection.md). Workers inherit the launcher's
    environment; the launcher's own numpy, already loaded, is unaffected.
    """
    if spills(options):
        for name in BLAS_THREAD_VARIABLES:
            os.environ.setdefault(name, "1")
