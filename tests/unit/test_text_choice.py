"""The training side's text choice (LaCLIP: one of [original] + rewrites per image per step):
uniform among a sample's texts, a pure function of (seed, epoch, key), fresh every epoch."""

from __future__ import annotations

import json
import pickle

import numpy as np

from transforms.handoff.text_choice import TextChoice, chosen_indices, sample_texts


def test_each_text_is_chosen_with_probability_one_over_n():
    """Over 60,000 samples of n texts (n = 1..6): each index's count is Binomial(N_n, 1/n);
    every count within 4 sigma of its mean."""
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 7, size=60_000)
    keys = [f"sample-{i}" for i in range(len(counts))]
    chosen = chosen_indices(keys, counts, seed=5, epoch=2)
    assert ((chosen >= 0) & (chosen < counts)).all()
    for n in range(2, 7):
        picks = chosen[counts == n]
        observed = np.bincount(picks, minlength=n)
        mean, sigma = len(picks) / n, np.sqrt(len(picks) * (1 / n) * (1 - 1 / n))
        assert (np.abs(observed - mean) < 4 * sigma).all(), (n, observed, mean, sigma)


def test_reproducible_per_seed_epoch_key_and_fresh_every_epoch():
    keys = [f"k{i}" for i in range(20_000)]
    counts = [5] * len(keys)
    first = chosen_indices(keys, counts, seed=1, epoch=0)
    assert (first == chosen_indices(keys, counts, seed=1, epoch=0)).all()
    # Order and company do not matter: a sample's choice is its own.
    assert (chosen_indices(keys[::-1], counts, 1, 0) == first[::-1]).all()
    assert chosen_indices(keys[7:8], [5], 1, 0)[0] == first[7]
    # Another epoch or seed: independent choices, equal with probability 1/5 (4 sigma).
    n, p = len(keys), 0.2
    for other in (chosen_indices(keys, counts, 1, 1), chosen_indices(keys, counts, 2, 0)):
        same = int((other == first).sum())
        assert abs(same - n * p) < 4 * np.sqrt(n * p * (1 - p)), same


def test_sample_texts_and_the_webdataset_map():
    meta = {"url": "u", "caption_0": "orig", "caption_1": "rw1", "caption_2": "rw2", "caption_4": "gap"}
    sample = {"__key__": "img7", "json": json.dumps(meta).encode(), "txt": b"orig"}
    assert sample_texts(sample) == ["orig", "rw1", "rw2"]  # in order, up to the first gap
    assert sample_texts({"txt": b"only"}) == ["only"]
    assert sample_texts({"json": b"not json", "txt": b"t"}) == ["t"]
    assert pickle.loads(pickle.dumps(TextChoice(seed=9, epoch=3))).choose(sample) in ("orig", "rw1", "rw2")

    class Epoch:  # what open_clip's SharedEpoch offers
        value = 0

        def get_value(self):
            return self.value

    epoch = Epoch()
    choice = TextChoice(seed=9, epoch=epoch)
    seen = set()
    for e in range(40):
        epoch.value = e
        out = choice(dict(sample))
        index = chosen_indices(["img7"], [3], 9, e)[0]
        assert out["txt"] == ["orig", "rw1", "rw2"][index].encode()
        seen.add(out["txt"])
    assert seen == {b"orig", b"rw1", b"rw2"}
