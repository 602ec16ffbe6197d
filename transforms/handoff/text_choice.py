"""One text per image per step, as LaCLIP trains: a reproducible draw among a sample's captions.

LaCLIP ("Improving CLIP Training with Language Rewrites") trains with
`random.choice([original] + rewrites)` for every image at every step. The curation's
hand-offs carry every text of a sample: the reshard's `.json` holds `caption_0` (the
original), `caption_1`, ... (docs/dedup.md, section 3). Here the choice of epoch e for a
sample is `floor(draw(epoch_seed(seed, e), key + "\\x00caption") * n)` among its n texts:
a pure function of (seed, epoch, key), so every data-loader worker, node and restart
agrees on it, and each text is chosen with probability 1/n in an epoch, independently
across epochs (`epoch_seed`: the online-balancing loader's per-epoch seed).

Pure Python and numpy; webdataset is imported only by `webdataset_choose_text`.
"""

from __future__ import annotations

import json
from typing import Callable, Optional, Sequence

import numpy as np

from transforms.core.hashing import key_hashes, uniform_draws
from transforms.handoff.online_balancing import EpochSource, _current_epoch, epoch_seed, webdataset_key

CAPTION_PREFIX = "caption_"


def sample_texts(sample: dict, json_key: str = "json", text_key: str = "txt") -> list[str]:
    """A webdataset sample's texts: its `.json`'s caption_0, caption_1 ... in order, or, without
    them, its text member alone."""
    meta = sample.get(json_key)
    if isinstance(meta, (bytes, bytearray, str)):
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = None
    texts: list[str] = []
    if isinstance(meta, dict):
        while isinstance(meta.get(f"{CAPTION_PREFIX}{len(texts)}"), str):
            texts.append(meta[f"{CAPTION_PREFIX}{len(texts)}"])
    if not texts and text_key in sample:
        text = sample[text_key]
        texts = [text.decode("utf-8") if isinstance(text, (bytes, bytearray)) else str(text)]
    return texts


def chosen_indices(keys: Sequence[str], counts: Sequence[int], seed: int, epoch: int) -> np.ndarray:
    """For each sample (its key, its number of texts), the index of its text in epoch `epoch`."""
    draws = uniform_draws(key_hashes(key + "\x00caption" for key in keys), epoch_seed(seed, epoch))
    counts = np.asarray(counts, dtype=np.int64)
    return np.minimum((draws * counts).astype(np.int64), np.maximum(counts - 1, 0))


class TextChoice:
    """A webdataset map: sets the sample's text member (`text_key`) to this epoch's chosen text.

    `epoch` as in `online_balancing.EpochFilter` (an int, a callable, open_clip's SharedEpoch, a
    multiprocessing.Value), read at every sample; `key_fn` gives the sample's key (`__key__`).
    Picklable, so DataLoader workers get a copy.
    """

    def __init__(
        self,
        seed: int,
        epoch: EpochSource,
        key_fn: Callable[[dict], str] = webdataset_key,
        text_key: str = "txt",
        json_key: str = "json",
    ):
        self.seed = seed
        self.epoch = epoch
        self.key_fn = key_fn
        self.text_key = text_key
        self.json_key = json_key

    def choose(self, sample: dict) -> Optional[str]:
        texts = sample_texts(sample, self.json_key, self.text_key)
        if not texts:
            return None
        index = chosen_indices([self.key_fn(sample)], [len(texts)], self.seed, _current_epoch(self.epoch))[0]
        return texts[int(index)]

    def __call__(self, sample: dict) -> dict:
        text = self.choose(sample)
        if text is not None:
            sample[self.text_key] = text.encode("utf-8")
        return sample


def webdataset_choose_text(seed: int, epoch: EpochSource, key_fn: Callable[[dict], str] = webdataset_key, **kwargs):
    """`wds.map(TextChoice(...))`: put it after `wds.tarfile_to_samples()` (raw bytes), before decoding."""
    import webdataset as wds

    return wds.map(TextChoice(seed, epoch, key_fn, **kwargs))
