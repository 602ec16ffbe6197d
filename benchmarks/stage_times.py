"""Where a local curation's time goes: wall seconds and worker memory per Beam stage.

    python -m benchmarks.stage_times [--min_seconds 0.1] -- CURATE ARGUMENTS...

Runs `beam_pipeline.curate` in this process with its arguments (use
--direct_running_mode=multi_processing to see the workers), and prints, for every
stage the FnApiRunner runs (one after the other: it never runs two at once), the
seconds from its start to the next stage's start, the transforms fused into it,
and the peak RSS of the two largest worker processes meanwhile. The first line
includes the run's set-up (checks, pipeline construction, worker start); the
last one the teardown. Stages shorter than --min_seconds are summed in one line.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import re
import sys
import time
from typing import Optional, Sequence

import psutil

# The FnApiRunner logs "Running bundle for stage ..." here, at debug level, as each stage starts.
_STAGE_LOGGER = "apache_beam.runners.portability.fn_api_runner.fn_runner.run_bundle"
# A fused transform's name, two levels deep: the curation's stages (Balance, WriteOutputs)
# are composites, and what runs is the transform inside them (Balance/MatchEntries).
_TRANSFORM = re.compile(r"AppliedPTransform_([A-Za-z]+(?:-[A-Za-z]+)?)")


class _ChildSampler:
    """Peak RSS (MiB) of every child process since the last take, and their CPU seconds, sampled every 0.1 s.

    The sampling runs in a process of its own, not in a thread: the command forks
    its warm worker process only while the launcher runs a single thread
    (beam_pipeline.launcher.warm_workers), and should run here as it runs for a user.
    """

    def __init__(self):
        context = multiprocessing.get_context("fork")
        self._requests, answers = context.Pipe()
        self._process = context.Process(target=_sample, args=(os.getpid(), answers), daemon=True)
        self._process.start()
        answers.close()

    def take(self) -> tuple[float, list[int]]:
        """(CPU seconds of the children since the last take, the two largest peaks since then)."""
        self._requests.send("take")
        return self._requests.recv()

    def close(self) -> None:
        self._requests.send("stop")
        self._process.join()


def _sample(launcher_pid: int, requests) -> None:
    me, launcher = os.getpid(), psutil.Process(launcher_pid)
    peaks: dict[int, int] = {}
    cpu: dict[int, float] = {}  # user + system seconds of every child seen, at its last sample
    taken = 0.0

    def sample() -> None:
        for child in launcher.children(recursive=True):
            if child.pid == me:
                continue
            try:
                rss = child.memory_info().rss >> 20
                times = child.cpu_times()
            except psutil.Error:
                continue
            peaks[child.pid] = max(peaks.get(child.pid, 0), rss)
            cpu[child.pid] = times.user + times.system

    while True:
        sample()
        if requests.poll(0.1):
            if requests.recv() == "stop":
                return
            sample()
            used, taken = sum(cpu.values()) - taken, sum(cpu.values())
            requests.send((used, sorted(peaks.values())[-2:]))
            peaks = {}


class StageTimer(logging.Handler):
    """Collects (seconds, fused transforms, (children's CPU seconds, worker peaks)) per stage from the runner's log."""

    def __init__(self, children: Optional[_ChildSampler] = None):
        super().__init__(logging.DEBUG)
        self.started = time.monotonic()
        self.stages: list[tuple[float, str, list]] = []
        self._current = ("set-up", self.started)
        self._children = children

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Running bundle for stage"):
            names = (name.replace("-", "/") for name in _TRANSFORM.findall(message))
            self._close(",".join(dict.fromkeys(names)) or message[25:100])

    def _close(self, next_name: str) -> None:
        now = time.monotonic()
        name, since = self._current
        self.stages.append((now - since, name, self._children.take() if self._children else (0.0, [])))
        self._current = (next_name, now)

    def finish(self) -> None:
        self._close("")


def format_stages(stages, min_seconds: float) -> str:
    lines, small, small_cpu, small_count = [], 0.0, 0.0, 0
    for seconds, name, (cpu, peaks) in stages:
        if seconds < min_seconds:
            small += seconds
            small_cpu += cpu
            small_count += 1
            continue
        lines.append(f"{seconds:7.2f} s  CPU {cpu:6.2f} s  workers' peak MiB {str(peaks):<12}  {name}")
    lines.append(f"{small:7.2f} s  CPU {small_cpu:6.2f} s  in {small_count} shorter stages")
    total_cpu = sum(cpu for _, _, (cpu, _) in stages)
    lines.append(f"{sum(s for s, _, _ in stages):7.2f} s  CPU {total_cpu:6.2f} s  in all")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--min_seconds", type=float, default=0.1, help="stages shorter than this are summed (default: 0.1)"
    )
    parser.add_argument("curate_args", nargs=argparse.REMAINDER, help="-- then the arguments of beam_pipeline.curate")
    args = parser.parse_args(argv)
    curate_args = args.curate_args[1:] if args.curate_args[:1] == ["--"] else args.curate_args
    from beam_pipeline import curate
    from beam_pipeline.launcher import prebuild

    sampler = _ChildSampler()
    timer = StageTimer(sampler)
    logger = logging.getLogger(_STAGE_LOGGER)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # the debug lines go to the timer only
    logger.addHandler(timer)
    try:
        status = curate.run(curate_args, prebuild.start(curate_args))  # as the command runs it
    finally:
        logger.removeHandler(timer)
        logger.setLevel(level)
        logger.propagate = propagate
        timer.finish()
        sampler.close()
    print(format_stages(timer.stages, args.min_seconds))
    return status


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(main())
