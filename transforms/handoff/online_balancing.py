"""Online balancing: a fresh, reproducible balanced draw every training epoch.

MetaCLIP's paper re-samples the balanced subset at every epoch instead of fixing it once
("online balancing"): each sample is used in an epoch with its keep probability
P = 1 - prod(1 - p_e), independently per epoch. The curation writes P for every accepted
record to `matches/*.parquet` (`key`, `entry_ids`, `keep_prob`); this module turns that
match index into per-epoch selections.

The draw of epoch e is `keep_decisions(keep_prob, key_hashes(keys), epoch_seed(seed, e))`:
the very functions the pipeline uses for its one offline subset, with a per-epoch seed
mixed from (seed, e) by the same SplitMix64 finaliser. So a selection is a pure function
of (match index, seed, epoch): every data-loader worker, node and restart agrees on it
without any communication, and resuming at epoch e gives epoch e's samples again.

Pure Python, numpy and pyarrow; no Beam import (training machines need not install
Beam's runners). `EpochFilter` and `webdataset_select` plug the draw into a
webdataset/PyTorch loader; webdataset is imported only by `webdataset_select`.
"""

from __future__ import annotations

import glob
import os
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import pyarrow as pa

from transforms.core.balancing import keep_decisions
from transforms.core.hashing import key_hashes, splitmix64

KEY = "key"
KEEP_PROB = "keep_prob"


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s draw: SplitMix64(seed) XOR SplitMix64(SplitMix64(epoch)).

    Different from `seed` itself (the offline subset's draw) for every epoch, and from
    every other epoch's, with overwhelming probability; a pure function of (seed, epoch).
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    mixed_seed = splitmix64(np.array([seed % 2**64], dtype=np.uint64))
    mixed_epoch = splitmix64(splitmix64(np.array([epoch % 2**64], dtype=np.uint64)))
    return int((mixed_seed ^ mixed_epoch)[0])


def _hashes_in_chunks(keys: pa.Array, chunk: int = 1 << 20) -> np.ndarray:
    parts = [key_hashes(keys.slice(start, chunk).to_pylist()) for start in range(0, len(keys), chunk)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


class MatchIndex:
    """Keys and keep probabilities of a curation's `matches/`, ready for per-epoch draws.

    Rows are kept in the index's order (shard by shard, sorted by key inside each).
    A key that occurs in several rows (a duplicate key of the pool) is one sample here,
    with the largest of its keep probabilities: all rows of a key share one draw, so
    that is exactly "used when any of its rows would be". Keys are held as one Arrow
    string array; per sample the index adds 24 bytes (hash, probability, lookup order).
    Building it hashes every key once, in Python: about 2 s per million keys.
    """

    def __init__(self, keys: Union[Sequence[str], pa.Array, pa.ChunkedArray], keep_probs: Sequence[float]):
        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        keys = keys if isinstance(keys, pa.Array) else pa.array(list(keys), pa.string())
        probs = np.asarray(keep_probs, dtype=np.float64)
        if len(keys) != len(probs):
            raise ValueError(f"{len(keys)} keys but {len(probs)} keep probabilities")
        hashes = _hashes_in_chunks(keys)
        unique, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        if len(unique) < len(keys):  # repeated keys: one sample each, with the largest P
            best = np.zeros(len(unique), dtype=np.float64)
            np.maximum.at(best, inverse, probs)
            rows = np.sort(first)
            keys, probs, hashes = keys.take(pa.array(rows)), best[inverse[rows]], hashes[rows]
        self.key_array = keys
        self.keep_probs = probs
        self.hashes = hashes
        self._order = np.argsort(hashes, kind="stable")
        self._sorted_hashes = self.hashes[self._order]

    @property
    def keys(self) -> list:
        """The keys as a Python list (for small indexes; `key_array` is the compact form)."""
        return self.key_array.to_pylist()

    @classmethod
    def read(cls, path: str) -> "MatchIndex":
        """From a curation's `matches/` directory (or its output directory, or one parquet file)."""
        import pyarrow.parquet as pq

        if os.path.isdir(os.path.join(path, "matches")):
            path = os.path.join(path, "matches")
        files = sorted(glob.glob(os.path.join(path, "part-*.parquet"))) if os.path.isdir(path) else [path]
        if not files:
            raise FileNotFoundError(f"no part-*.parquet match index in {path}")
        tables = [pq.read_table(name, columns=[KEY, KEEP_PROB]) for name in files]
        table = pa.concat_tables(tables)
        return cls(table.column(KEY), table.column(KEEP_PROB).to_numpy())

    def __len__(self) -> int:
        return len(self.key_array)

    def __contains__(self, key: str) -> bool:
        return self._position(key_hashes([key])[0]) is not None

    def probability(self, key: str) -> float:
        """The keep probability of `key`; 0 for a key the index does not hold."""
        position = self._position(key_hashes([key])[0])
        return 0.0 if position is None else float(self.keep_probs[position])

    def _position(self, hash_value) -> Optional[int]:
        i = int(np.searchsorted(self._sorted_hashes, hash_value))
        if i < len(self._sorted_hashes) and self._sorted_hashes[i] == hash_value:
            return int(self._order[i])
        return None


class OnlineBalancing:
    """Per-epoch balanced selections from a match index.

        balancing = OnlineBalancing(MatchIndex.read("curated/"), seed=0)
        balancing.epoch_keys(3)      # the keys to train on in epoch 3
        balancing.keeps(key, 3)      # one sample's decision (for filtering a stream)

    The size of an epoch is a sum of independent Bernoulli(P) draws: mean
    `expected_epoch_size` = sum P, standard deviation sqrt(sum P (1 - P)).
    """

    def __init__(self, index: MatchIndex, seed: int = 0):
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in 0 .. 2**64-1, got {seed}")
        self.index = index
        self.seed = seed
        self._cached = None  # (epoch, its mask)

    @property
    def expected_epoch_size(self) -> float:
        return float(self.index.keep_probs.sum())

    @property
    def epoch_size_std(self) -> float:
        p = self.index.keep_probs
        return float(np.sqrt((p * (1.0 - p)).sum()))

    def epoch_mask(self, epoch: int) -> np.ndarray:
        """Boolean mask over the index's rows: which samples epoch `epoch` uses."""
        return keep_decisions(self.index.keep_probs, self.index.hashes, epoch_seed(self.seed, epoch))

    def epoch_keys(self, epoch: int) -> list[str]:
        """The keys epoch `epoch` uses, in the index's order."""
        return self.index.key_array.filter(pa.array(self.epoch_mask(epoch))).to_pylist()

    def iter_epoch(self, epoch: int, chunk: int = 1 << 20) -> Iterator[str]:
        """Yield the keys epoch `epoch` uses, in the index's order, a chunk at a time."""
        mask = self.epoch_mask(epoch)
        keys = self.index.key_array
        for start in range(0, len(keys), chunk):
            yield from keys.slice(start, chunk).filter(pa.array(mask[start : start + chunk])).to_pylist()

    def keeps(self, key: str, epoch: int) -> bool:
        """Whether epoch `epoch` uses the sample `key` (False for keys not in the index).

        The epoch's whole mask is drawn once (milliseconds per million samples) and
        cached, so filtering a stream costs one hash and one binary search per sample.
        """
        position = self.index._position(key_hashes([key])[0])
        if position is None:
            return False
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self.epoch_mask(epoch))
        return bool(self._cached[1][position])


EpochSource = Union[int, Callable[[], int], object]


def _current_epoch(epoch: EpochSource) -> int:
    """An int; or a callable returning one; or open_clip's SharedEpoch (get_value());
    or a multiprocessing.Value (.value)."""
    if isinstance(epoch, (int, np.integer)):
        return int(epoch)
    if hasattr(epoch, "get_value"):
        return int(epoch.get_value())
    if hasattr(epoch, "value"):
        return int(epoch.value)
    if callable(epoch):
        return int(epoch())
    raise TypeError(f"cannot read an epoch from {epoch!r}")


def webdataset_key(sample: dict) -> str:
    """The default sample key of a webdataset sample: its `__key__`."""
    return sample["__key__"]


class EpochFilter:
    """A predicate for webdataset pipelines: keep a sample iff this epoch's draw uses it.

    `epoch` is read at every call, so pass something shared with the training loop
    (open_clip's `SharedEpoch`, a `multiprocessing.Value('i')`, or a callable) when
    data-loader workers persist across epochs; a plain int fixes the epoch.
    `key_fn` maps a sample to its curation key: `__key__` by default; for DataComp
    shards curated by uid, e.g. `lambda s: json.loads(s["json"])["uid"]`.
    Picklable (when its parts are), so DataLoader workers get a copy.

    A wrong `key_fn` would silently pass no sample at all (no key is in the index): if
    none of the first `check_after` samples has a key the index knows, the filter raises
    LookupError instead.
    """

    def __init__(
        self,
        balancing: OnlineBalancing,
        epoch: EpochSource,
        key_fn: Callable[[dict], str] = webdataset_key,
        check_after: int = 1000,
    ):
        self.balancing = balancing
        self.epoch = epoch
        self.key_fn = key_fn
        self.check_after = check_after
        self._unknown = 0  # samples seen before the first known key; -1 once one is known

    def __call__(self, sample: dict) -> bool:
        key = self.key_fn(sample)
        if self._unknown >= 0:
            self._check_key(key, sample)
        return self.balancing.keeps(key, _current_epoch(self.epoch))

    def _check_key(self, key: str, sample: dict) -> None:
        if key in self.balancing.index:
            self._unknown = -1
            return
        self._unknown += 1
        if self._unknown >= self.check_after:
            raise LookupError(
                f"none of the first {self._unknown} samples has a key of the match index (the last: {key!r}, "
                f"from __key__ {sample.get('__key__')!r}): key_fn must give the curation key, e.g. "
                "key_fn=lambda s: json.loads(s['json'])['uid'] for shards curated with --key_field uid "
                "(--input_preset datacomp)"
            )

    def filter(self, samples: Iterable[dict]) -> Iterator[dict]:
        return (sample for sample in samples if self(sample))


def webdataset_select(
    balancing: OnlineBalancing,
    epoch: EpochSource,
    key_fn: Callable[[dict], str] = webdataset_key,
    check_after: int = 1000,
):
    """`wds.select(EpochFilter(...))`: a stage to put right after `wds.tarfile_to_samples()`
    (before decoding, so dropped samples are never decoded). Needs webdataset installed."""
    import webdataset as wds

    return wds.select(EpochFilter(balancing, epoch, key_fn, check_after))
