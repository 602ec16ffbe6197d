"""A command's process tree measured as it runs: wall and CPU time, each process's peak RSS.

Shared by the end-to-end benchmarks (bench_e2e, bench_first_run, bench_automaton):
`run_curation` runs a command line while `ProcessTreeSampler` samples the RSS and CPU
time of every process of its tree (psutil), each with a role (`process_role`: the
main process, SDK workers, shells, others); `curate_command` is the curation's
command line as those benchmarks run it; `machine_info` and `load_average` describe
the machine a figure was measured on.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import psutil

from beam_pipeline.launcher.warm_workers import WARM_PROCESS_NAME, WORKER_PROCESS_NAME
from transforms.runtime.quick_exit import SDK_WORKER_MODULE

MIB = 1 << 20


# --------------------------------------------------------------------------- RSS sampling


def process_role(cmdline: Sequence[str], is_root: bool, name: str = "") -> str:
    """'main' for the command itself, 'sdk_worker' for a Beam SDK worker process,
    'shell' for a /bin/sh wrapper or the relay of a forked worker, 'warm' for the
    process that forks them (beam_pipeline.launcher.warm_workers), else 'other'."""
    if is_root:
        return "main"
    if name == WORKER_PROCESS_NAME:
        return "sdk_worker"  # forked: its command line is the launcher's
    if name == WARM_PROCESS_NAME:
        return "warm"
    joined = " ".join(cmdline)
    if "worker_relay.py" in joined:
        return "shell"
    if SDK_WORKER_MODULE in joined:
        # Beam starts workers with shell=True: `sh -c "python -m ...sdk_worker_main"`.
        if cmdline and os.path.basename(cmdline[0]) in ("sh", "dash", "bash"):
            return "shell"
        return "sdk_worker"
    return "other"


class ProcessTreeSampler:
    """Samples RSS and CPU time of a process and all its descendants in a thread.

    Keeps, for every process ever seen, its peak RSS, its last CPU times and its
    command line; the peak of the tree's summed RSS; and a timeline (one point a
    second) of the summed RSS per role. RSS counts shared pages in each process.
    """

    def __init__(self, root_pid: int, interval: float = 0.2, role: Callable = process_role):
        self.root_pid = root_pid
        self.interval = interval
        self._role = role
        self._processes: dict = {}  # (pid, create_time) -> record
        self._handles: dict = {}
        self.peak_tree_rss = 0
        self.timeline: list = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._started = None
        self._last_timeline = -1.0

    def start(self) -> "ProcessTreeSampler":
        self._started = time.monotonic()
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _tree(self) -> list:
        try:
            root = self._handles.get(self.root_pid) or psutil.Process(self.root_pid)
            self._handles[self.root_pid] = root
            return [root] + root.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return []

    def sample(self) -> None:
        now = time.monotonic() - (self._started or time.monotonic())
        total = 0
        by_role: dict = {}
        for proc in self._tree():
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    cpu = proc.cpu_times()
                    ident = (proc.pid, proc.create_time())
                    record = self._processes.get(ident)
                    if record is not None and record["role"] == "other":
                        # A forked process is named just after the fork: look again.
                        record["role"] = self._role(record["cmdline"].split(), False, proc.name())
                    if record is None:
                        try:
                            cmdline = proc.cmdline()
                        except (psutil.AccessDenied, psutil.ZombieProcess):
                            cmdline = [proc.name()]
                        record = self._processes[ident] = {
                            "pid": proc.pid,
                            "role": self._role(cmdline, proc.pid == self.root_pid, proc.name()),
                            "cmdline": " ".join(cmdline)[:300],
                            "peak_rss": 0,
                            "first_seen_s": round(now, 2),
                        }
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            record["peak_rss"] = max(record["peak_rss"], rss)
            record["last_rss"] = rss
            record["cpu_s"] = round(cpu.user + cpu.system, 3)
            record["last_seen_s"] = round(now, 2)
            total += rss
            by_role[record["role"]] = by_role.get(record["role"], 0) + rss
        self.samples += 1
        self.peak_tree_rss = max(self.peak_tree_rss, total)
        if now - self._last_timeline >= 1.0:
            self._last_timeline = now
            self.timeline.append(
                {
                    "t": round(now, 1),
                    "total_mib": round(total / MIB, 1),
                    **{f"{k}_mib": round(v / MIB, 1) for k, v in sorted(by_role.items())},
                }
            )

    def processes(self) -> list:
        """Every process seen, the root first, then by role and first sighting."""
        order = {"main": 0, "sdk_worker": 1, "warm": 2, "shell": 3, "other": 4}
        return sorted(self._processes.values(), key=lambda r: (order.get(r["role"], 9), r["first_seen_s"], r["pid"]))

    def peak_rss(self, pid: int) -> int:
        return max((r["peak_rss"] for r in self._processes.values() if r["pid"] == pid), default=0)


# --------------------------------------------------------------------------- machine


def machine_info() -> dict:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("apache_beam", "pyarrow", "numpy", "ahocorasick", "psutil"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except ImportError:
            versions[name] = None
    try:
        from importlib.metadata import version

        versions["pyahocorasick"] = version("pyahocorasick")
        versions.pop("ahocorasick", None)
    except Exception:  # noqa: BLE001 - informational only
        pass
    return {
        "platform": platform.platform(),
        "cpu_model": model or platform.processor(),
        "logical_cpus": psutil.cpu_count(logical=True),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "python": platform.python_version(),
        "versions": versions,
    }


def load_average() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# --------------------------------------------------------------------------- one curation


def curate_command(
    pool_glob: str, metadata: str, output_dir: str, threshold: int, workers: int, extra: Sequence[str] = ()
) -> list:
    return [
        sys.executable,
        "-m",
        "beam_pipeline.curate",
        "--input",
        pool_glob,
        "--text_field",
        "text",
        "--url_field",
        "url",
        "--key_field",
        "key",
        "--metadata",
        metadata,
        "--threshold",
        str(threshold),
        "--output_dir",
        output_dir,
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={workers}",
        "--progress",
        "0",
        *extra,
    ]


def _printed_seconds(stdout: str) -> Optional[float]:
    match = re.search(r"^\s*seconds\s+([0-9.]+)\s*$", stdout, re.MULTILINE)
    return float(match.group(1)) if match else None


def run_curation(
    command: Sequence[str], interval: float = 0.2, log_path: Optional[Path] = None, cwd: Optional[str] = None
) -> dict:
    """Run the command line, sampling its process tree; wall and CPU time, per-process peaks."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=cwd)
        sampler = ProcessTreeSampler(process.pid, interval).start()
        returncode = process.wait()
        wall = time.perf_counter() - started
        sampler.stop()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if log_path is not None:
        log_path.write_text(f"$ {' '.join(command)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    processes = sampler.processes()
    workers = [p for p in processes if p["role"] == "sdk_worker"]
    main = next((p for p in processes if p["role"] == "main"), None)
    return {
        "returncode": returncode,
        "wall_s": round(wall, 3),
        "pipeline_s": _printed_seconds(stdout),
        # CPU of every process of the tree that has been waited for (the command and
        # whatever it reaped), from the kernel's accounting.
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3),
        "peak_rss_main_mib": round(main["peak_rss"] / MIB, 1) if main else None,
        "peak_rss_workers_mib": [round(p["peak_rss"] / MIB, 1) for p in workers],
        "peak_rss_tree_mib": round(sampler.peak_tree_rss / MIB, 1),
        "processes": [
            {
                **p,
                "peak_rss_mib": round(p.pop("peak_rss") / MIB, 1),
                "last_rss_mib": round(p.pop("last_rss", 0) / MIB, 1),
            }
            for p in processes
        ],
        "samples": sampler.samples,
        "timeline": sampler.timeline,
        "stdout_tail": stdout[-2000:],
        "stderr_tail": stderr[-3000:] if returncode else stderr[-500:],
    }
