"""Checks of a run against its inputs and outputs: each refuses with one line (UsageError), none writes.

What options alone cannot tell: which hand-offs the input allows, whether its keys
are DataComp uids, whether the output and reshard directories may be written, and
(Each stage checks its own flags: beam_pipeline/stages/.)
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.curation.outputs import STATS_JSON
from beam_pipeline.options import CurationArgs, UsageError
from beam_pipeline.stages import worker_path_flags
from beam_pipeline.stages.assets import first_keys
from transforms.beam.io import glob_paths
from transforms.formats.layout import InputLayout
from transforms.formats.tar import WEBDATASET
from transforms.handoff.reshard import MANIFEST, RESHARD_MARKER
from transforms.handoff.uids import UidError, check_uids


def handoffs(args: CurationArgs, fmt: str, layout: InputLayout) -> frozenset:
    """The hand-off outputs asked for (or the defaults of `auto`), checked against the input."""
    if args.handoff is None:  # auto
        chosen = set()
        if fmt == WEBDATASET:
            chosen.add("webdataset")
        if args.input_preset == "datacomp":
            chosen.add("datacomp")
        if args.input_preset in ("datacomp", "img2dataset") and fmt != WEBDATASET:
            chosen.add("img2dataset")
    else:
        chosen = set(args.handoff)
    if "webdataset" in chosen and fmt != WEBDATASET:
        raise UsageError(
            f"--handoff webdataset lists kept keys per input tar shard; the input is {fmt}, not webdataset"
        )
    if "img2dataset" in chosen and not any(name == "url" for name, _ in layout.passthrough):
        raise UsageError(
            "--handoff img2dataset needs image URLs: pass --url_field (or --input_preset datacomp|img2dataset)"
        )
    if args.reshard_dir is not None and fmt != WEBDATASET:
        raise UsageError(f"--reshard_dir writes new webdataset shards from webdataset input shards; the input is {fmt}")
    return frozenset(chosen)


def check_uid_keys(paths: Sequence[str], layout: InputLayout) -> None:
    """The first keys of the run must be DataComp uids: fail now, not after hours of work
    (a later key that is not one still fails the run, naming it)."""
    path, keys = first_keys(paths, layout)
    try:
        check_uids(keys, f" (a key of {path})")
    except UidError as error:
        raise UsageError(f"--handoff datacomp: {error}") from None


def img2dataset_key_column(layout: InputLayout) -> str:
    """Named after the input's key field (`uid` for DataComp); `source_key` when that would be
    `key`, which img2dataset overwrites with its own sample key."""
    name = layout.key_field
    if name and not name.startswith(".") and name not in ("key", "url", "caption"):
        return name
    return "source_key"


def check_reshard_dir(reshard_dir: str, paths: Sequence[str], output_dir: str, overwrite: bool) -> None:
    """Refuse a directory that holds inputs, files of someone else, or a reshard finished by
    another run (without --overwrite). A reshard of this very output directory whose run
    did not finish (no stats.json) is a leftover, replaced like the other outputs."""
    directory = absolute_path(reshard_dir.rstrip("/"))
    for path in paths:
        if absolute_path(path).startswith(directory + "/"):
            raise UsageError(f"--reshard_dir {reshard_dir} holds input shards ({path}); choose a new directory")
    manifest = FileSystems.join(directory, MANIFEST)
    finished = FileSystems.exists(manifest)
    if finished and not overwrite:
        try:
            with FileSystems.open(manifest) as handle:
                source = json.load(handle).get("source", {}).get("output_dir")
        except Exception:  # noqa: BLE001 - unreadable: treat as finished by someone else
            source = None
        if source not in (output_dir, absolute_path(output_dir)) or FileSystems.exists(
            FileSystems.join(output_dir, STATS_JSON)
        ):
            raise UsageError(
                f"--reshard_dir {reshard_dir} already holds a finished reshard ({MANIFEST}); "
                "pass --overwrite to replace it"
            )
    ours = finished or FileSystems.exists(FileSystems.join(directory, RESHARD_MARKER))
    if not ours and FileSystems.exists(directory) and glob_paths(FileSystems.join(directory, "**")):
        raise UsageError(
            f"--reshard_dir {reshard_dir} is not empty and is not a BalanceBeam reshard; "
            "choose an empty or new directory"
        )


def absolute_path(path: str) -> str:
    """A local path made absolute (what a manifest must hold to be read from anywhere); a URI as it is."""
    return path if "://" in path else os.path.abspath(path)


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse a finished run's directory (it holds stats.json) unless --overwrite."""
    if FileSystems.exists(FileSystems.join(output_dir, STATS_JSON)) and not overwrite:
        raise UsageError(
            f"--output_dir {output_dir} already holds a finished run (stats.json); pass --overwrite to replace it"
        )


# Flags whose files the Dataflow workers (or the service) read: they must name a filesystem
# the workers can reach. --imagenet_wnids is read here, before the run, and may stay local.
WORKER_PATH_FLAGS = ("input", "metadata", "output_dir", "reshard_dir")


def check_remote_paths(args: CurationArgs, runner: str, dry_run: bool) -> None:
    """On Dataflow, refuse a path on this machine's disk: its workers cannot read it.

    A dry run (--dry_run=True) only translates the job, so local files are fine there.
    """
    if runner not in ("dataflow", "testdataflow") or dry_run:
        return
    named = [(flag, value) for flag in WORKER_PATH_FLAGS for value in _values(getattr(args, flag))]
    named += [(flag, value) for flag in worker_path_flags() for value in _values(getattr(args.flags, flag))]
    for flag, value in named:
        if "://" not in value:
            raise UsageError(
                f"--{flag} {value} is on this machine's disk, which Dataflow workers cannot read: "
                "copy it to Cloud Storage and pass its gs:// path"
            )


def _values(value) -> tuple:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
