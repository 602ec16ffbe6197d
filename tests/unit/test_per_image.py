"""Per-image curation (docs/dedup.md, "Images with several texts") against a literal reading,
and MetaCLIP's per-image rule statistically."""

from __future__ import annotations

import dedup_reference as ref
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.dedup.keys import url_keys
from transforms.images.extra_texts import caption_fields, parse_extra_texts_line, texts_with_extras
from transforms.images.per_image import curate_image, image_group_key, image_texts


def curate_pool(urls, keys, matched, probs, files, rows, seed):
    """What a stage does: group by image key, curate each group (members in the order given)."""
    groups: dict[str, list[int]] = {}
    for i, u in enumerate(url_keys(urls)):
        groups.setdefault(image_group_key(u, files[i], rows[i]), []).append(i)
    out = {}
    for members in groups.values():
        dec = curate_image(
            [keys[i] for i in members],
            [matched[i] for i in members],
            [probs[i] for i in members],
            [files[i] for i in members],
            [rows[i] for i in members],
            seed,
        )
        picked = members[dec.picked] if dec.picked >= 0 else None
        out[frozenset(members)] = (picked, dec.kept, [members[i] for i in dec.texts_order])
    return out


_pool = st.lists(
    st.tuples(
        st.sampled_from(["http://a.com/1.jpg", "https://www.a.com/1.jpg/", "http://b.com/2", None, "", "c.org/x"]),
        st.sampled_from([f"k{i}" for i in range(8)]),  # repeated sample keys: ties to the earlier position
        st.booleans(),
        st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(_pool, st.integers(0, 2**63), st.randoms(use_true_random=False))
def test_per_image_equals_the_literal_reading_in_any_order(pool, seed, rnd):
    urls, keys, matched, probs = (list(c) for c in zip(*pool, strict=True))
    files, rows = [i // 4 for i in range(len(pool))], [i % 4 for i in range(len(pool))]
    positions = list(zip(files, rows, strict=True))
    want = ref.per_image_literal([ref.url_key(u) for u in urls], keys, matched, probs, positions, seed)
    want = {frozenset(v[2]): v for v in want.values()}
    assert curate_pool(urls, keys, matched, probs, files, rows, seed) == want
    perm = list(range(len(pool)))
    rnd.shuffle(perm)
    moved = curate_pool(*([col[i] for i in perm] for col in (urls, keys, matched, probs, files, rows)), seed)
    back = {
        frozenset(perm[i] for i in g): (None if p is None else perm[p], kept, [perm[i] for i in order])
        for g, (p, kept, order) in moved.items()
    }
    assert back == want


def test_an_image_without_a_match_is_not_kept_and_own_images_stay_apart():
    dec = curate_image(["a", "b"], [False, False], [1.0, 1.0], [0, 0], [0, 1], 1)
    assert dec.picked == -1 and not dec.kept and sorted(dec.texts_order) == [0, 1]
    assert image_group_key(None, 0, 1) != image_group_key(None, 0, 2)
    assert image_group_key("a.com", 0, 1) == image_group_key("a.com", 3, 4) != image_group_key(None, 0, 1)
    pool = curate_pool([None, None, ""], ["k", "k", "k"], [True] * 3, [1.0] * 3, [0, 0, 0], [0, 1, 2], 5)
    assert sorted(pool.values()) == [(0, True, [0]), (1, True, [1]), (2, True, [2])]


def test_texts_list_puts_the_picked_text_first_unmatched_included():
    keys = [f"t{i}" for i in range(6)]
    matched = [False, True, False, True, True, False]
    dec = curate_image(keys, matched, [1.0] * 6, [0] * 6, range(6), 9)
    by_draw = sorted(range(6), key=lambda i: ref.draw(9, keys[i] + "\x00text"))
    assert dec.picked == next(i for i in by_draw if matched[i]) and dec.kept
    assert dec.texts_order == [dec.picked] + [i for i in by_draw if i != dec.picked]
    texts = [f"caption {i}" for i in range(6)]
    assert image_texts(texts, dec)[0] == texts[dec.picked] and sorted(image_texts(texts, dec)) == sorted(texts)


def test_fraction_of_images_kept_matches_metaclips_expectation():
    """MetaCLIP keeps an image with its randomly picked matched text's probability: over N images,
    kept / N has mean (1/N) sum_i q_i, q_i = mean of p over image i's matched texts (0 if none),
    and standard deviation sqrt(sum_i q_i (1 - q_i)) / N. Tolerance: 4 sigma."""
    rng = np.random.default_rng(2024)
    n_images, seed = 20_000, 77
    kept, q, any_caption = 0, np.empty(n_images), np.empty(n_images)
    for img in range(n_images):
        m = int(rng.integers(1, 6))
        matched = rng.random(m) < 0.6
        probs = np.where(matched, rng.choice([0.05, 0.3, 0.7, 1.0], size=m), 0.0)
        q[img] = probs[matched].mean() if matched.any() else 0.0
        any_caption[img] = 1 - np.prod(1 - probs[matched])  # per caption: kept if any of its texts is
        keys = [f"img{img}-cap{j}" for j in range(m)]
        kept += curate_image(keys, matched, probs, [img] * m, range(m), seed).kept
    expected, sigma = q.sum(), np.sqrt((q * (1 - q)).sum())
    assert sigma > 10
    assert abs(kept - expected) < 4 * sigma, (kept, expected, sigma)
    # the test tells the per-image rule from per-caption curation ("kept if any caption is kept")
    assert abs(kept - any_caption.sum()) > 4 * sigma


def test_extra_texts_lines_and_fields():
    assert parse_extra_texts_line('{"key": "k1", "texts": ["a", "b"]}') == ("k1", ["a", "b"])
    assert parse_extra_texts_line(b'{"key": "k", "texts": []}') == ("k", [])
    for bad, reason in [
        ("{", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"texts": []}', "no string `key`"),
        ('{"key": "", "texts": []}', "no string `key`"),
        ('{"key": "k", "texts": "a"}', "not a list"),
        ('{"key": "k", "texts": ["a", 1]}', "not a list"),
        (b"\xff", "not JSON"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_extra_texts_line(bad)
    assert texts_with_extras("orig", [None, "r1", "", "r2"]) == ["orig", "r1", "r2"]
    assert texts_with_extras(None, []) == [None]
    assert caption_fields(["a", "b"]) == {"caption_0": "a", "caption_1": "b"}
