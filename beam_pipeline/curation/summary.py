"""The table a local run prints when it finishes, read back from stats.json and the hand-off indexes."""

from __future__ import annotations

import json
import sys

from apache_beam.io.filesystems import FileSystems

from beam_pipeline.curation.config import CurationConfig
from beam_pipeline.curation.outputs import (
    IMG2DATASET_DIR,
    KEPT_KEYS_DIR,
    SHARDS_JSON,
    STATS_JSON,
    SUBSET_UIDS,
)
from transforms.handoff.img2dataset import img2dataset_command
from transforms.handoff.reshard import MANIFEST


def _read_json(path: str):
    with FileSystems.open(path) as handle:
        return json.load(handle)


def print_summary(config: CurationConfig, seconds: float) -> None:
    stats = _read_json(config.output(STATS_JSON))
    read = stats["records_read"]
    rows = [("records read", read), ("rejected", stats["records_rejected"])]
    rows += [(f"filtered: {name}", count) for name, count in stats.get("filtered_by_filter", {}).items()]
    for stage in config.stages:
        rows += stage.summary_rows(stats)
    if not any(name == "kept" for name, _ in rows):
        rows.append(("kept", stats["records_kept"]))
    rows += [
        ("seconds", f"{seconds:.1f}"),
        ("captions/s", f"{read / seconds:,.0f}" if seconds > 0 else "-"),
    ]
    if config.report:
        rows.append(("report", config.output("report.html")))
    rows += _handoff_rows(config)
    duplicates = _duplicates_warning(stats)
    if duplicates:
        rows.append(("WARNING", duplicates))
        print(f"warning: {duplicates}", file=sys.stderr)
    width = max(len(name) for name, _ in rows)
    print(f"curation finished: {config.output_dir}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def _duplicates_warning(stats: dict) -> str:
    """One line on records that share a key, or "" when every key is unique."""
    count = stats.get("duplicate_keys", 0)
    if not count:
        return ""
    examples = ", ".join(repr(key) for key in stats.get("duplicate_key_examples", [])[:3])
    return (
        f"{count:,} records have the key of an earlier record (e.g. {examples}): such records share one keep "
        "draw, and training-time tools that look samples up by key see them as one; see stats.json's "
        "duplicate_keys, and give records unique keys (--key_field)"
    )


def _handoff_rows(config: CurationConfig) -> list[tuple[str, str]]:
    rows = []
    if "webdataset" in config.handoff:
        shards = _read_json(config.output(SHARDS_JSON))
        rows.append(
            (
                "webdataset key lists",
                f"{shards['kept']:,} kept keys of {len(shards['shards'])} input shards in {KEPT_KEYS_DIR}/",
            )
        )
    if config.reshard_dir:
        manifest = _read_json(FileSystems.join(config.reshard_dir, MANIFEST))
        rows.append(
            (
                "resharded",
                f"{manifest['train_num_samples']:,} samples in {manifest['num_shards']} shards: "
                f"{manifest['train_data']} (open_clip needs --workers x GPUs <= {manifest['num_shards']})",
            )
        )
    if "datacomp" in config.handoff:
        rows.append(("DataComp uids", config.output(SUBSET_UIDS)))
    if "img2dataset" in config.handoff:
        rows.append(("img2dataset list", config.output(IMG2DATASET_DIR, "*.parquet")))
        texts = ("texts",) if "texts" in config.subset_schema.names else ()
        command = img2dataset_command(
            config.output(IMG2DATASET_DIR), config.img2dataset_key_column, extra_columns=texts
        )
        rows.append(("download with", command))
    return rows
