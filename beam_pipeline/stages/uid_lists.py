"""--allow_uids FILE and --deny_uids FILE: keep only the listed records, or drop the listed ones.

FILE is a DataComp subset file (.npy of dtype u8,u8, as subset_uids.npy) or a text file of
keys, one a line (transforms.filters.uid_lists). Uses: intersecting a pool with a published
subset (DataComp's, DFN's), dropping an evaluation set's samples (decontamination). A
dropped record goes to filtered/ as `allow_uids` (not listed) or `deny_uids` (listed).
The list is read once per worker process.
"""

from __future__ import annotations

import functools
import posixpath
import threading

import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.option_checks import UsageError
from beam_pipeline.stages.assets import RAW, first_keys, read_asset
from beam_pipeline.stages.base import RunContext, Stage, StageInputs, StageOutput
from transforms.beam.drop import DropRecords, DropRule
from transforms.core.columns import KEY
from transforms.filters.uid_lists import UidList
from transforms.handoff.uids import is_uid

_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _uid_list(path: str) -> UidList:
    """The list of `path`, read once per worker process (every DoFn instance shares it)."""
    with _lock, FileSystems.open(path, compression_type=RAW) as handle:
        return UidList.from_bytes(handle.read(), path)


class _ListRule(DropRule):
    def __init__(self, path: str, allow: bool, reason: str):
        self.path, self.allow, self.names = path, allow, (reason,)

    def setup(self) -> None:
        self._list = _uid_list(self.path)

    def first_failed(self, batch: pa.RecordBatch) -> np.ndarray:
        listed = self._list.contains(batch.column(KEY).to_pylist())
        return np.where(listed != self.allow, 0, -1)


class _UidListStage(Stage):
    allow = True
    flag = ""

    def __init__(self, path: str, listed: int):
        self.path, self.listed = path, listed
        self.reasons = (self.flag,)

    @classmethod
    def add_arguments(cls, group, add) -> None:
        what = "keep only the records whose key" if cls.allow else "drop the records whose key"
        add(
            group,
            f"--{cls.flag}",
            default=None,
            metavar="FILE",
            help=f"{what} FILE lists: a DataComp subset .npy (dtype u8,u8, as subset_uids.npy; needs uids as keys) "
            "or a text file of keys, one a line (default: none)",
        )

    @classmethod
    def used(cls, args) -> bool:
        return getattr(args, cls.flag) is not None

    @classmethod
    def configure(cls, args, inputs: StageInputs) -> "_UidListStage":
        path = getattr(args, cls.flag)
        flag = f"--{cls.flag} {path}"
        try:
            keys = UidList.from_bytes(read_asset(path, f"--{cls.flag}"), flag)
        except ValueError as error:
            raise UsageError(str(error)) from None
        if keys.is_uid_array:
            _path, sample = first_keys(inputs.paths, inputs.layout)
            if sample and not any(is_uid(key) for key in sample):
                raise UsageError(
                    f"{flag} lists DataComp uids (an .npy), but the input's keys are not uids (e.g. {sample[0]!r}): "
                    "take the keys from the uid column (--input_preset datacomp, or --key_field uid), "
                    "or give a text file of keys"
                )
        return cls(path, len(keys))

    def apply(self, batches, run: RunContext) -> StageOutput:
        kept = batches | self.name >> DropRecords(_ListRule(self.path, self.allow, self.flag))
        return StageOutput(kept.batches, dropped=kept.dropped)

    def stats(self, figures: dict, final: dict) -> dict:
        return {"filters": {self.flag: {"file": posixpath.basename(self.path), "listed": self.listed}}}


class AllowUids(_UidListStage):
    """--allow_uids FILE: only the listed records go on."""

    name, main_flag, flag, allow = "AllowUids", "--allow_uids", "allow_uids", True
    worker_path_flags = ("allow_uids",)


class DenyUids(_UidListStage):
    """--deny_uids FILE: the listed records are dropped."""

    name, main_flag, flag, allow = "DenyUids", "--deny_uids", "deny_uids", False
    worker_path_flags = ("deny_uids",)
