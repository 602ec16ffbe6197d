"""Checks of the DataComp test support: the pool generator and the independent reference.

tests/datacomp_pool.py writes small DataComp-style pools; tests/datacomp_reference.py
decides DataComp's filters row by row from docs/datacomp.md ("The rules"). Both are checked here
on their own (hand-built rows, and what the generated pool actually plants), so that the
pipeline tests that lean on them can trust them.
"""

from __future__ import annotations

import math
import re
import time
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import datacomp_pool as dp
import datacomp_reference as ref


@pytest.fixture(scope="module")
def model():
    return ref.load_bundled_model()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    start = time.perf_counter()
    generated = dp.write_pool(tmp_path_factory.mktemp("datacomp_pool"))
    print(f"write_pool: {generated.n_rows} rows in {time.perf_counter() - start:.2f} s")
    return generated


def _row(text="a happy dog playing with a red ball on the beach", w=640, h=480, **extra) -> dict:
    return {"uid": extra.pop("uid", "0" * 32), "text": text, "original_width": w, "original_height": h, **extra}


# ---------------------------------------------------------------- the reference's rules


@pytest.mark.parametrize(
    "text, w, h, kept",
    [
        ("sleeping puppies", 640, 480, False),  # 2 words
        ("three sleeping puppies", 640, 480, True),  # 3 words
        ("a b c", 640, 480, False),  # 5 code points
        ("a b cd", 640, 480, True),  # 6 code points
        ("happy\xa0dog\xa0playing", 640, 480, True),  # str.split splits at NBSP
        ("Ein Hund mit einem roten Ball", 640, 480, False),  # not en
        (None, 199, 640, False),
        (None, 200, 200, True),
        (None, 600, 200, True),  # aspect exactly 3.0
        (None, 200, 600, True),
        (None, 601, 200, False),  # just above 3.0
        (None, 0, 640, False),  # a zero side fails
        (None, 640, 0, False),
        (None, 0, 0, False),
    ],
)
def test_basic_rule(model, text, w, h, kept):
    row = _row(w=w, h=h) if text is None else _row(text, w, h)
    assert ref.basic_keep(row, model) is kept


@pytest.mark.parametrize(
    "text, count",
    [
        ("", 0),
        ("a b", 2),
        ("  a   b  ", 2),
        ("sunflowers\n", 2),  # one per line break
        ("\n", 1),
        ("a\n\nb", 4),
        ("a\tb\rc\vd\fe\0f", 6),
        ("happy\xa0dog\xa0playing", 1),  # NBSP is not fastText white space
        ("dog\x1ccat\x1dbird", 1),
        ("a red car\u3000on the road", 5),
    ],
)
def test_fasttext_token_count(text, count):
    assert ref.fasttext_token_count(text) == count


def test_image_caption_part(model):
    assert not ref.image_caption_keep(_row("a dog"), model)  # 5 code points
    assert ref.image_caption_keep(_row("a dog."), model)
    assert ref.image_caption_keep(_row("sunflowers\n"), model)  # 1 word, 2 fastText tokens
    assert not ref.image_caption_keep(_row("happy\xa0dog\xa0playing"), model)  # 1 fastText token


def test_language_of_lone_surrogate_and_newline(model):
    assert ref.fasttext_language(model, "a dog\ud800 playing on the beach") == "en"
    assert ref.fasttext_language(model, "a dog\non the beach") == "en"
    assert ref.fasttext_language(model, "Маленькая собака играет в парке") == "ru"


def test_clip_threshold_and_keep():
    scores = [0.1 * i for i in range(1, 11)]  # N = 10, distinct
    threshold = ref.clip_threshold(scores, 0.3)  # n = int(3.0000000000000004) = 3: the 4th largest
    assert threshold == pytest.approx(0.7)
    assert sum(ref.clip_keep(s, threshold) for s in scores) == 4
    tied = [0.5, 0.5, 0.5, 0.5, 0.5, 0.4, 0.3, 0.2, 0.1, 0.9]
    assert sum(ref.clip_keep(s, ref.clip_threshold(tied, 0.3)) for s in tied) == 6  # n+1 plus ties
    with_nan = [math.nan, math.nan] + scores
    assert ref.clip_threshold(with_nan, 0.3) == pytest.approx(0.7)  # NaNs sort last
    assert not ref.clip_keep(math.nan, -math.inf) and not ref.clip_keep(None, 0.0)
    assert math.isnan(ref.clip_threshold(scores, 1.0))  # n >= N: nothing kept
    assert not ref.clip_keep(0.9, ref.clip_threshold(scores, 1.0))


def test_inner_product_argmax_not_l2_and_ties_to_lowest():
    centroids = np.array([[1.0, 0.0], [3.0, 3.0], [3.0, 3.0]], dtype=np.float32)
    x = np.array([1.0, 0.0], dtype=np.float16)
    assert ref.nearest_centroid(x, centroids) == 1  # L2-nearest would be 0
    assert ref.nearest_centroid(np.array([0.0, 1.0]), centroids) == 1  # 1 and 2 tie: the lower
    assert ref.nearest_centroid(np.array([math.nan, 1.0]), centroids) == -1
    assert ref.targets_from_features(np.array([[1.0, 0.0], [-1.0, -0.5]]), centroids) == {0, 1}


def test_text_rule_with_wordnet(model, wordnet):
    dog, gar = dp.IN21K["dog"][1], dp.IN21K["gar"][1]
    for text, kept in [
        ("two dogs playing together", True),  # morphy
        ("Dog sleeping outside today", True),  # lower-cased
        ("my lovely dog.", False),  # "dog." has no synset
        ("aromatic spices and herbs", True),  # an adjective whose offset is gar.n.01's
        ("Ein Hund mit einem Hund", False),
    ]:
        assert ref.text_keep(_row(text), model, wordnet, {dog, gar}) is kept, text
    tiger_animal = dp.IN21K["tiger"][1]
    assert not ref.text_keep(_row("a tiger resting in the shade"), model, wordnet, {tiger_animal})
    assert ref.wnid_offsets(["n02084071\n", 5]) == {2084071, 5}


def test_keep_sets_order_and_arguments(model):
    rows = [
        _row("a b c", uid="a" * 32, clip_l14_similarity_score=0.1),
        _row(uid="b" * 32, clip_l14_similarity_score=0.1),
        _row(uid="c" * 32, clip_l14_similarity_score=0.9),
    ]
    result = ref.reference_keep_sets(rows, model, filters=["clip_score", "basic"], fraction=0.3)
    assert result["kept"] == {"c" * 32}
    assert result["first_failed"] == {"a" * 32: "basic", "b" * 32: "clip_score"}
    assert result["threshold"] == pytest.approx(0.9)
    with pytest.raises(ValueError):
        ref.reference_keep_sets(rows, model, filters=["clip_score"], fraction=0.3, threshold=0.2)
    with pytest.raises(ValueError):
        ref.reference_keep_sets(rows, model, filters=["text"])


# ---------------------------------------------------------------- the generated pool


def test_pool_reads_back(pool):
    assert [p.name for p in pool.parquet_paths] == ["00000000.parquet", "00000001.parquet", "00000002.parquet"]
    for path, npz, uids in zip(pool.parquet_paths, pool.npz_paths, pool.uids, strict=True):
        table = pq.read_table(path)
        assert table.num_rows == 700 and table.column("uid").to_pylist() == uids
        assert table.schema.field("original_width").type == pa.int64()
        assert table.schema.field("clip_l14_similarity_score").type == pa.float32()
        assert table.schema.field("face_bboxes").type == pa.list_(pa.list_(pa.float64()))
        with np.load(npz) as arrays:
            assert {"b32_img", "b32_txt", "l14_img", "l14_txt"} <= set(arrays.files)
            assert all(arrays[k].dtype == np.float16 and len(arrays[k]) == 700 for k in arrays.files)
            assert arrays["l14_img"].shape == (700, 32) and arrays["b32_img"].shape == (700, 16)
    uids = [u for shard in pool.uids for u in shard]
    assert len(set(uids)) == len(uids) == pool.n_rows
    assert all(re.fullmatch("[0-9a-f]{32}", u) for u in uids)
    assert sum(u.startswith("0000") for u in uids) > 10
    rows = pool.rows()
    assert all(row["text"] for row in rows)
    first = np.load(pool.npz_paths[1])["l14_img"][0]
    assert np.array_equal(rows[700]["l14_img"], first)


def test_pool_is_deterministic_and_other_layouts(tmp_path, pool):
    again = dp.write_pool(tmp_path / "again")
    assert again.uids == pool.uids and again.targets == pool.targets
    first, second = pq.read_table(pool.parquet_paths[2]), pq.read_table(again.parquet_paths[2])
    for name in first.column_names:  # column by column: Arrow's equals says NaN != NaN
        if name.startswith("clip_"):
            assert np.array_equal(first.column(name), second.column(name), equal_nan=True)
        else:
            assert first.column(name).equals(second.column(name)), name
    columns = dp.write_pool(tmp_path / "columns", embeddings="columns", shards=1, rows_per_shard=100)
    table = pq.read_table(columns.parquet_paths[0])
    assert table.schema.field("l14_img").type == pa.list_(pa.float32(), 32) and not columns.npz_paths
    assert np.array_equal(np.array(table.column("l14_txt").to_pylist()[5]), columns.rows()[5]["l14_txt"])
    packed = dp.write_pool(tmp_path / "deflated", compressed_npz=True, shards=1, rows_per_shard=100)
    with zipfile.ZipFile(packed.npz_paths[0]) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    with zipfile.ZipFile(pool.npz_paths[0]) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}


def test_pool_plants_the_image_cases(pool):
    centroids = pool.centroids()
    images = np.stack([row["l14_img"] for row in pool.rows()]).astype(np.float64)
    inner = np.array([ref.nearest_centroid(x, centroids) for x in images])
    l2 = np.argmin(((images[:, None, :] - centroids[None].astype(np.float64)) ** 2).sum(axis=2), axis=1)
    in_targets = np.isin(inner, list(pool.targets)) != np.isin(l2, list(pool.targets))
    print(f"L2 != inner product on {np.mean(inner != l2):.0%} of rows; on {in_targets.sum()} it flips the image part")
    assert (inner != l2).sum() > 0 and in_targets.sum() > 0
    features = np.load(pool.imagenet_features_path)
    listed = {int(line) for line in pool.target_clusters_path.read_text().split()}
    assert features.dtype == np.float32
    assert ref.targets_from_features(features, centroids) == listed == pool.targets
    low, high = pool.duplicate_centroid
    assert np.array_equal(centroids[low], centroids[high]) and low in pool.targets and high not in pool.targets
    assert (inner == low).sum() > 0  # rows that tie between the copies


def test_pool_scores_plant_ties_and_nans(pool):
    for field in ("clip_l14_similarity_score", "clip_b32_similarity_score"):
        scores = [row[field] for row in pool.rows()]
        threshold = ref.clip_threshold(scores, 0.3)
        assert sum(math.isnan(s) for s in scores) == 3
        assert sum(s == threshold for s in scores) >= 3 and sum(s > threshold for s in scores) <= 630


def test_wnid_table_matches_wordnet(pool, wordnet):
    for noun, (name, offset) in dp.IN21K.items():
        assert wordnet.synset(name).offset() == offset, noun
        if noun not in ("tiger", "gar"):  # the planted quirks (see datacomp_pool)
            assert wordnet.synsets(noun)[0].name() == name, noun
    assert {int(w[1:]) for w in pool.imagenet_wnids_path.read_text().split()} == pool.in21k_offsets
    assert wordnet.synsets("aromatic")[0].offset() == dp.IN21K["gar"][1]


def test_planted_rows_are_decided_as_planted(pool, model):
    rows = {row["uid"]: row for row in pool.rows()}
    planted = {name: rows[uid] for name, uid in pool.planted.items()}
    basic = {name: ref.basic_keep(row, model) for name, row in planted.items()}
    assert not basic["words_2"] and basic["words_3"] and not basic["chars_5"] and basic["chars_6"]
    assert basic["min_200"] and basic["aspect_3"] and basic["aspect_3_tall"] and basic["nbsp"]
    assert not any(basic[n] for n in ("min_199", "aspect_above_3", "zero_width", "zero_height", "zero_both"))
    caption = {name: ref.image_caption_keep(row, model) for name, row in planted.items()}
    assert not caption["image_chars_5"] and caption["image_chars_6"] and caption["newline_token"]
    assert not caption["nbsp"] and not caption["info_separator"] and not basic["newline_token"]
    assert not basic["german"] and not caption["german"]


def test_each_filter_keeps_a_share_of_the_pool(pool, model, request):
    rows, centroids = pool.rows(), pool.centroids()
    runs = {
        "basic": {"filters": ["basic"]},
        "clip_score f=0.3": {"filters": ["clip_score"], "fraction": 0.3},
        "image": {"filters": ["image"], "centroids": centroids, "targets": pool.targets},
        "DataComp-1B": {"filters": ["clip_score", "image"], "fraction": 0.3, "centroids": centroids},
    }
    runs["DataComp-1B"]["targets"] = pool.targets
    try:
        reader = request.getfixturevalue("wordnet")
    except pytest.skip.Exception as skipped:
        print(f"text filter share not measured: {skipped}")
    else:
        runs["text"] = {"filters": ["text"], "wordnet_reader": reader, "in21k": pool.in21k_offsets}
    for name, kwargs in runs.items():
        kept = ref.reference_keep_sets(rows, model, **kwargs)["kept"]
        share = len(kept) / len(rows)
        print(f"{name}: keeps {len(kept)} of {len(rows)} ({share:.1%})")
        assert 0 < share < 1, name


def test_planted_text_rows_with_wordnet(pool, model, wordnet):
    rows = {row["uid"]: row for row in pool.rows()}

    def keep(name: str) -> bool:
        return ref.text_keep(rows[pool.planted[name]], model, wordnet, pool.in21k_offsets)

    assert keep("plural") and keep("capitalised") and keep("irregular_plural") and keep("pos_collision")
    assert not keep("punct_attached") and not keep("first_sense") and not keep("german")
