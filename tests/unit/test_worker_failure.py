"""A run that failed because a worker died: the one line (beam_pipeline.curation.worker_failure)."""

from __future__ import annotations

import signal

from beam_pipeline.curation.worker_failure import describe_status, looks_like_a_lost_worker, message, oom_kills

KILLED = signal.SIGKILL  # a wait status: the signal's number in the low bits
TERMINATED = signal.SIGTERM
EXIT_3 = 3 << 8
CHANNEL_CLOSED = RuntimeError("Channel closed prematurely.")


def test_statuses_in_words():
    assert describe_status(KILLED) == "killed by signal 9 (SIGKILL)"
    assert describe_status(TERMINATED) == "killed by signal 15 (SIGTERM)"
    assert describe_status(EXIT_3) == "exit status 3"


def test_a_killed_worker_is_named_with_its_signal_and_the_rerun_is_said_safe():
    line = message(CHANNEL_CLOSED, [(41, KILLED)], oom_before=7, oom_after=7)
    assert line == (
        "an SDK worker process died (pid 41, killed by signal 9 (SIGKILL)): the run did not finish and "
        "wrote no stats.json; rerunning the same command is safe"
    )


def test_the_out_of_memory_killer_running_during_the_run_gives_the_hint():
    line = message(CHANNEL_CLOSED, [(41, KILLED)], oom_before=7, oom_after=8)
    assert line.endswith(
        "The kernel's out-of-memory killer ran during this run: use fewer worker processes "
        "(--direct_num_workers) or a smaller --batch_size"
    )


def test_an_unknown_counter_makes_the_hint_a_possibility_for_sigkill_only():
    assert "If memory ran out" in message(CHANNEL_CLOSED, [(41, KILLED)], None, None)
    assert "memory" not in message(CHANNEL_CLOSED, [(41, TERMINATED)], None, None)


def test_a_lost_channel_without_a_report_says_how_is_not_known():
    line = message(CHANNEL_CLOSED, [], 1, 1)
    assert line.startswith("an SDK worker process died (how is not known")
    wrapped = RuntimeError("Pipeline failed")
    wrapped.__cause__ = CHANNEL_CLOSED
    assert looks_like_a_lost_worker(wrapped)


def test_any_other_failure_is_not_turned_into_a_worker_death():
    bug = ValueError("embeddings hold NaN or infinity")
    assert message(bug, [], 1, 1) is None
    # A worker that exited with a status, not a signal, while the run failed for another reason.
    assert message(bug, [(41, EXIT_3)], 1, 1) is None
    # A signal is a finding on its own.
    assert message(bug, [(41, KILLED)], 1, 1) is not None


def test_the_oom_counter_is_read_from_vmstat(tmp_path):
    vmstat = tmp_path / "vmstat"
    vmstat.write_text("nr_free_pages 10\noom_kill 12\n")
    assert oom_kills(str(vmstat)) == 12
    vmstat.write_text("nr_free_pages 10\n")
    assert oom_kills(str(vmstat)) is None
    assert oom_kills(str(tmp_path / "absent")) is None
