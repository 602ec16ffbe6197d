"""curate_images (every image of a bucket at once) against curate_image per image and the literal reading."""

from __future__ import annotations

import dedup_reference as ref
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.dedup.keys import url_key, url_keys
from transforms.images.per_image import curate_images, image_group_key

_pool = st.lists(
    st.tuples(
        st.sampled_from(["http://a.com/1.jpg", "https://www.a.com/1.jpg/", "http://b.com/2", None, "", "c.org/x"]),
        st.sampled_from([f"k{i}" for i in range(8)]),
        st.booleans(),
        st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]),
    ),
    min_size=0,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(_pool, st.integers(0, 2**63))
def test_curate_images_equals_the_literal_reading(pool, seed):
    urls, keys, matched, probs = ([c[j] for c in pool] for j in range(4))
    files, rows = [i // 5 for i in range(len(pool))], [i % 5 for i in range(len(pool))]
    images = [image_group_key(u, f, r) for u, f, r in zip(url_keys(urls), files, rows, strict=True)]
    got = curate_images(images, keys, matched, probs, files, rows, seed)
    want = ref.per_image_literal(
        [ref.url_key(u) for u in urls], keys, matched, probs, list(zip(files, rows, strict=True)), seed
    )
    kept = {picked: order for picked, is_kept, order in want.values() if is_kept}
    assert sorted(np.flatnonzero(got.kept).tolist()) == sorted(kept)
    assert got.texts_orders == kept
    assert sorted(got.sizes.tolist()) == sorted(len(v[2]) for v in want.values())
    assert got.images_matched == sum(v[0] is not None for v in want.values())


_url_part = st.sampled_from(["http://", "https://", "www.", "a.com", "/", "//", "?", "?utm_x=1", "?ref=2", "?feed",
                             " ", "\t", "\r", "\n", "x", "é", "?q=1"])  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(_url_part, max_size=8).map("".join)), max_size=12))
def test_url_keys_of_a_column_equal_url_key_one_by_one(urls):
    assert url_keys(urls) == [url_key(u) for u in urls]
    without_newlines = [None if u is None else u.replace("\n", "") for u in urls]
    assert url_keys(without_newlines) == [url_key(u) for u in without_newlines]


def test_images_kept_match_metaclips_expectation_on_a_large_pool():
    """The vectorised rule the stage runs, on 200,000 generated images of 1..7 captions: images kept
    ~ sum over images of q_i (q_i = mean p over the image's matched captions, 0 if none), variance
    sum q_i (1 - q_i); within 4 sigma. Per caption (kept if any caption is) is far outside."""
    rng = np.random.default_rng(31)
    n_images, seed = 200_000, 8
    sizes = rng.integers(1, 8, size=n_images)
    image = np.repeat(np.arange(n_images), sizes)
    n = len(image)
    matched = rng.random(n) < 0.5
    probs = np.where(matched, rng.choice([0.02, 0.1, 0.4, 1.0], size=n), 0.0)
    within = np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    keys = [f"i{img}-{j}" for img, j in zip(image, within, strict=True)]
    got = curate_images(image, keys, matched, probs, np.zeros(n, np.int64), np.arange(n), seed)
    sum_p = np.bincount(image, weights=probs, minlength=n_images)
    count = np.bincount(image, weights=matched, minlength=n_images)
    q = np.divide(sum_p, count, out=np.zeros(n_images), where=count > 0)
    expected, sigma = q.sum(), np.sqrt((q * (1 - q)).sum())
    kept = int(got.kept.sum())
    assert abs(kept - expected) < 4 * sigma, (kept, expected, sigma)
    any_caption = (1 - np.exp(np.bincount(image, weights=np.log1p(-np.minimum(probs, 1 - 1e-12))))).sum()
    assert abs(kept - any_caption) > 4 * sigma
    assert len(set(image[got.kept].tolist())) == kept  # at most one record per image
