"""The curation pipeline's command line: read, match, count, sample, write.

    python -m beam_pipeline.curate --input 'pool/*.parquet' --metadata metadata.json \\
        --threshold 20000 --output_dir out [Beam options]

Every check of options, inputs and metadata happens before the pipeline is
built; a failed check prints one line and exits with status 2. The run itself
is in beam_pipeline/curation/, one concern a module (command.py runs it).

This module imports no Beam at load: `main` first starts the automaton build of
a local --metadata file (beam_pipeline.launcher.prebuild), which then runs during
the ~1 s the launcher spends importing Beam and the pipeline's modules.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from beam_pipeline.launcher import prebuild
from transforms.runtime import quick_exit


def run(argv: Optional[Sequence[str]] = None, early: Optional[prebuild.Prebuild] = None) -> int:
    """Run a curation from command-line arguments; return the exit status.

    `early`: a prebuild child started for this command line, or None.
    """
    from beam_pipeline.curation.command import run_curation  # Beam and the pipeline: after `main`'s early start

    return run_curation(sys.argv[1:] if argv is None else argv, early)


def _run_command_line() -> int:
    argv = sys.argv[1:]
    early = prebuild.start(argv)
    logging.getLogger().setLevel(logging.WARNING)
    return run(argv, early)


def main() -> None:
    """The curation command, raising SystemExit with its status (for callers in a process that goes on)."""
    sys.exit(_run_command_line())


def command() -> None:
    """The curation command as a process of its own (`balancebeam-curate`, `python -m beam_pipeline.curate`).

    Once every output is written and the summary printed, the process leaves
    without freeing the checked metadata and the graph object by object (~0.45 s
    for the 500k list; transforms.runtime.quick_exit), its exit hooks run.
    """
    quick_exit.exit_now(_run_command_line())


if __name__ == "__main__":
    command()
