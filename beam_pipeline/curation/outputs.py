"""The names of a run's outputs, and the only code of a run that deletes files.

`clear_outputs` removes what an unfinished (or, with --overwrite, a finished) earlier
run left in the output and reshard directories. `run` calls it by name, after every
check has passed: checking a run (config.prepare) never touches a file.
"""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems

from transforms.beam.io import glob_paths, write_atomically
from transforms.beam.spill import delete_spill_dir
from transforms.handoff.reshard import FRAGMENTS, MANIFEST, RESHARD_MARKER

FILTERED_DIR = "filtered"  # records a DataComp filter dropped: key, first failed filter
DUPLICATES_DIR = "duplicates"  # records --dedup removed: key, kind, duplicate_of, similarity, captions
SEMDEDUP_SCORES_DIR = "semdedup/scores"  # --dedup semantic: every judged record's score (the eps curve)
SEMDEDUP_CENTROIDS = "semdedup/centroids.npy"  # --dedup semantic: the centroids it used
OUTPUT_SUBDIRS = ("matches", "subset", "rejected", FILTERED_DIR, DUPLICATES_DIR, SEMDEDUP_SCORES_DIR)
STATS_JSON = "stats.json"
OUTPUT_FILES = (
    "entry_counts.json",
    STATS_JSON,
    "figures.json",
    "entry_counts_kept.json",
    "report.html",
    "size_vs_threshold.csv",
)
# Batches between the passes, on local engines (transforms.beam.spill); deleted at the end.
SPILL_DIR = ".balancebeam-work"
# Training hand-off outputs (docs/training-handoff.md), cleared like the others.
SUBSET_UIDS = "subset_uids.npy"
IMG2DATASET_DIR = "img2dataset"
KEPT_KEYS_DIR = "webdataset/kept_keys"
SHARDS_JSON = "webdataset/shards.json"
HANDOFF_GLOBS = (
    "img2dataset/part-*",
    "img2dataset/.part-*",
    "webdataset/kept_keys/*",
    ".subset_uids/*",
    "plots/*.png",
    "plots/.*.png.tmp-*",
)
HANDOFF_FILES = (SUBSET_UIDS, SHARDS_JSON, SEMDEDUP_CENTROIDS)


def clear_outputs(output_dir: str, reshard_dir: "str | None") -> None:
    """Remove an earlier run's outputs from `output_dir` (and its reshard from `reshard_dir`).

    Call it only once the run's checks have passed (config.prepare): a finished run's
    directory is refused there unless --overwrite was given.
    """
    clear_unfinished_outputs(output_dir)
    if reshard_dir is not None:
        clear_reshard_dir(reshard_dir)


def clear_unfinished_outputs(output_dir: str) -> None:
    """Remove every output and temporary file a run writes in `output_dir`, and its spill directory."""
    stale = []
    for subdir in OUTPUT_SUBDIRS:
        for pattern in ("part-*", ".part-*"):
            stale += glob_paths(FileSystems.join(output_dir, subdir, pattern))
    for name in OUTPUT_FILES:
        path = FileSystems.join(output_dir, name)
        if FileSystems.exists(path):
            stale.append(path)
        # Temporary files of a killed run (see transforms.beam.io.write_atomically).
        stale += glob_paths(FileSystems.join(output_dir, f".{name}.tmp-*"))
    for pattern in HANDOFF_GLOBS:
        stale += glob_paths(FileSystems.join(output_dir, pattern))
    for name in HANDOFF_FILES:
        directory, _, base = FileSystems.join(output_dir, name).rpartition("/")
        for pattern in (base, f".{base}.tmp-*"):
            stale += glob_paths(FileSystems.join(directory, pattern))
    if stale:
        FileSystems.delete(stale)
    delete_spill_dir(FileSystems.join(output_dir, SPILL_DIR))


def clear_reshard_dir(reshard_dir: str) -> None:
    """Remove an earlier reshard's shards, fragments and manifest; mark the directory ours."""
    directory = reshard_dir.rstrip("/")
    stale = []
    for pattern in (
        "[0-9][0-9][0-9][0-9][0-9][0-9]*.tar",
        ".[0-9]*.tar.tmp-*",
        f"{FRAGMENTS}/*",
        MANIFEST,
        f".{MANIFEST}.tmp-*",
    ):
        stale += glob_paths(FileSystems.join(directory, pattern))
    if stale:
        FileSystems.delete(stale)
    marker = FileSystems.join(directory, RESHARD_MARKER)
    if not FileSystems.exists(marker):
        message = b"BalanceBeam reshard directory: reruns replace its *.tar and manifest.json\n"
        write_atomically(marker, lambda handle: handle.write(message))
