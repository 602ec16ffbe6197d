"""Small DataComp-style pools for the tests, deterministic from a seed.

`write_pool` writes parquet shards (the DataComp metadata columns) with their embeddings
(a same-named `.npz`, or fixed-size-list columns of the parquet), and the user assets
DataComp downloads: pool centroids, target clusters, ImageNet-1k-like features and an
ImageNet-21k-like wnid list. The data is planted to exercise docs/datacomp.md, "The rules":
captions at the word/character/token-count edges, odd white space, non-English text,
image sizes at 199/200 and aspect 3.0, exact score ties around the 30% threshold, NaN
scores, centroids of different norms (L2-nearest differs from the inner-product argmax)
and an exact duplicate centroid (argmax ties go to the lowest index).
`Pool.planted` names the uid of each planted edge case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# ImageNet-21k-like entries: the noun as it appears in captions -> (WordNet 3.0 synset, its
# offset). Offsets were read with nltk from WordNet 3.0 (tests/unit checks them when
# WordNet is installed), so the wnid list needs no WordNet at generation time. For most
# nouns the entry is `synsets(noun)[0]`, the sense DataComp's text filter compares.
# Two are planted quirks: `tiger` lists the animal (tiger.n.02) while `synsets("tiger")[0]`
# is "a fierce person", so "tiger" matches nothing; `gar` (a fish) shares its offset with
# the ADJECTIVE "aromatic", so "aromatic" matches (offsets are compared without POS).
_IN21K = """dog:dog.n.01:2084071 cat:cat.n.01:2121620 car:car.n.01:2958343 goose:goose.n.01:1855672
horse:horse.n.01:2374451 bird:bird.n.01:1503061 tree:tree.n.01:13104059 boat:boat.n.01:2858304
bicycle:bicycle.n.01:2834778 chair:chair.n.01:3001627 cup:cup.n.01:3147509 bottle:bottle.n.01:2876657
flower:flower.n.01:11669921 apple:apple.n.01:7739125 banana:banana.n.01:12352287 truck:truck.n.01:4490091
bus:bus.n.01:2924116 train:train.n.01:4468005 airplane:airplane.n.01:2691156 guitar:guitar.n.01:3467517
piano:piano.n.01:3928116 laptop:laptop.n.01:3642806 pizza:pizza.n.01:7873807 sandwich:sandwich.n.01:7695965
shoe:shoe.n.01:4199027 hat:hat.n.01:3497657 umbrella:umbrella.n.01:4507155 backpack:backpack.n.01:2769748
clock:clock.n.01:3046257 lamp:lamp.n.01:3636248 sofa:sofa.n.01:4256520 mountain:mountain.n.01:9359803
lake:lake.n.01:9328904 bridge:bridge.n.01:2898711 castle:palace.n.01:3878066 lion:lion.n.01:2129165
elephant:elephant.n.01:2503517 zebra:zebra.n.01:2391049 giraffe:giraffe.n.01:2439033 bear:bear.n.01:2131653
monkey:monkey.n.01:2484322 rabbit:rabbit.n.01:2324045 fox:fox.n.01:2118333 wolf:wolf.n.01:2114100
deer:deer.n.01:2430045 cow:cow.n.01:2403454 sheep:sheep.n.01:2411705 pig:hog.n.03:2395406 duck:duck.n.01:1846331
owl:owl.n.01:1621127 eagle:eagle.n.01:1613294 parrot:parrot.n.01:1816887 penguin:penguin.n.01:2055803
shark:shark.n.01:1482330 snake:snake.n.01:1726692 frog:frog.n.01:1639765 butterfly:butterfly.n.01:2274259
spider:spider.n.01:1772222 mushroom:mushroom.n.01:13001041 sunflower:sunflower.n.01:11978233
strawberry:strawberry.n.01:7745940 lemon:lemon.n.01:7749582 bread:bread.n.01:7679356 cheese:cheese.n.01:7850329
puppy:puppy.n.01:1322604 kitten:kitten.n.01:2122948 mouse:mouse.n.01:2330245 tiger:tiger.n.02:2129604
gar:gar.n.01:2641379"""
IN21K = {noun: (name, int(offset)) for noun, name, offset in (e.split(":") for e in _IN21K.split())}
PLURAL = {"goose": "geese", "mouse": "mice", "sheep": "sheep", "deer": "deer", "wolf": "wolves", "fox": "foxes"}
CAPTION_NOUNS = [n for n in IN21K if n != "gar"]
OTHER_NOUNS = """view day design photo image picture background style idea collection home room kitchen garden
park city street night morning summer winter wedding party family people man woman child girl boy friend logo
pattern texture vector illustration icon art poster card sale price product quality color field road water grass
snow sky sunset window wall floor light""".split()
PLACES = "beach lake mountain street park garden kitchen room field snow grass road table sofa bridge".split()
ADJECTIVES = """red blue green yellow black white small big old new beautiful cute happy little large young wooden
modern vintage bright dark sunny colorful fresh delicious funny lovely tiny giant fluffy""".split()
VERBS = "sitting running standing sleeping playing eating flying swimming lying jumping walking parked waiting".split()
PREPOSITIONS = "on in near under at with by beside behind".split()
# fmt: off
TEMPLATES = [
    "a {adj} {noun} {verb} {prep} the {place}", "{Adj} {nouns} {verb} {prep} the {place}.",
    "{noun} and {noun2} on a {adj} {place}", "close-up of a {adj} {noun}", "my {adj} {noun}.",
    "{Noun} {verb} {prep} a {adj} {other}", "{adj} {other} with a {noun}, {other2} and more",
    "{other} of the {other2} in the {place}", "photo of a {adj} {other} {prep} the {place}!",
    "{adj} {other} {verb} {prep} {other2}", "{Other} {prep} the {adj} {other2} - {other} ideas",
]
FOREIGN = [
    "Ein kleiner Hund spielt im Garten", "Die alte Brücke über den Fluss bei Nacht",
    "Schönes Ferienhaus mit Blick auf die Berge", "Un chat noir dort sur le canapé",
    "La tour Eiffel illuminée pendant la nuit", "Robe de mariée en dentelle blanche",
    "Un perro pequeño jugando en la playa", "Casa moderna con piscina y jardín",
    "Receta fácil de pastel de chocolate", "Una bella vista sulle colline toscane",
    "Uma praia linda no verão brasileiro", "Een fiets staat tegen de muur",
    "Маленькая собака играет в парке", "Красивый закат над морем", "一只小狗在公园里玩耍", "美しい桜の木と青い空",
    "قطة صغيرة تنام على الأريكة", "Ένα μικρό σκυλί παίζει στην παραλία", "पार्क में खेलता हुआ एक छोटा कुत्ता",
    "공원에서 노는 작은 강아지",
]
# Planted sizes: name -> (width, height); their caption is CAPTION_TEXT (plain English).
PLANTED_SIZES = {
    "min_199": (199, 640), "min_200": (200, 200), "aspect_3": (600, 200), "aspect_3_tall": (600, 1800),
    "aspect_above_3": (601, 200), "zero_width": (0, 640), "zero_height": (640, 0), "zero_both": (0, 0),
}
# fmt: on
# Planted text cases: name -> caption (the why in the comment); these rows are 640 x 480.
PLANTED_TEXT = {
    "words_2": "sleeping puppies",  # en, 2 words: basic fails (len(split) > 2)
    "words_3": "three sleeping puppies",  # en, 3 words: basic passes
    "chars_5": "a b c",  # en, 3 words, 5 code points: basic fails (len > 5)
    "chars_6": "a b cd",  # 6 code points: basic passes
    "image_chars_5": "a dog",  # 2 fastText tokens, 5 chars: image caption part fails
    "image_chars_6": "a dog.",  # 6 chars: image caption part passes
    "newline_token": "sunflowers\n",  # 1 word for str.split, 2 fastText tokens (one per \n)
    "newline_inside": "a dog\non the beach",  # LID sees "a dog on the beach"
    "nbsp": "happy\xa0dog\xa0playing",  # str.split: 3 words; fastText: 1 token
    "info_separator": "dog\x1ccat\x1dbird",  # \x1c-\x1d split in Python, not in fastText
    "ideographic_space": "a red car\u3000on the road",
    "tab_cr": "a dog\ton the\rbeach",
    "emoji": "a cute dog \U0001f436 playing in the park",
    "plural": "two dogs playing together",  # WordNet morphy: dogs -> dog
    "capitalised": "Dog sleeping outside today",  # synsets lower-cases
    "punct_attached": "my lovely dog.",  # "dog." has no synset: text filter fails
    "irregular_plural": "geese flying over water",  # morphy: geese -> goose
    "first_sense": "a tiger resting in the shade",  # synsets("tiger")[0] is not the animal
    "pos_collision": "aromatic spices and herbs",  # adjective offset == gar.n.01's
    "german": "Ein Hund mit einem roten Ball",
}
PLANTED_UIDS = ["0" * 31 + "1", "0" * 28 + "1a2b", "0" * 16 + "f" * 16, "f" * 32, "0" * 32]
CAPTION_TEXT = "a happy dog playing with a red ball on the beach"


@dataclass
class Pool:
    """What `write_pool` wrote; `rows()` gives every row for the reference."""

    directory: Path
    parquet_paths: list[Path]
    npz_paths: list[Path]  # empty with embeddings="columns"
    uids: list[list[str]]  # per shard, in row order
    centroids_path: Path
    target_clusters_path: Path
    imagenet_features_path: Path
    imagenet_wnids_path: Path
    targets: set[int]  # the cluster ids in target_clusters.txt
    in21k_offsets: set[int]  # the integers of imagenet_wnids.txt
    planted: dict[str, str]  # planted case name -> uid
    duplicate_centroid: tuple[int, int]  # (i, j): centroid j is an exact copy of centroid i < j
    wnid_source: str  # "table" (the built-in WordNet 3.0 offsets) or "wordnet" (looked up)
    embeddings: str
    _columns: dict = field(repr=False, default_factory=dict)

    @property
    def n_rows(self) -> int:
        return sum(len(u) for u in self.uids)

    def centroids(self) -> np.ndarray:
        return np.load(self.centroids_path)

    def rows(self) -> list[dict]:
        """Every row of the pool, shard by shard, as dicts (with `l14_img`, `l14_txt`)."""
        c = self._columns
        return [{name: c[name][i] for name in c} for i in range(len(c["uid"]))]


def _noun_form(rng, noun: str) -> str:
    """The noun, sometimes plural (irregular where English is), as captions write it."""
    if rng.random() < 0.3:
        return PLURAL.get(noun, noun + "s")
    return noun


def _caption(rng) -> str:
    """A foreign caption (20%) or an English one from TEMPLATES; a few with a line break or emoji."""
    r = rng.random()
    if r < 0.2:
        return FOREIGN[rng.integers(len(FOREIGN))]

    def pick(words: list[str]) -> str:
        return words[rng.integers(len(words))]

    noun, adj, other = _noun_form(rng, pick(CAPTION_NOUNS)), pick(ADJECTIVES), pick(OTHER_NOUNS)
    text = pick(TEMPLATES).format(
        adj=adj, Adj=adj.capitalize(), noun=noun, Noun=noun.capitalize(), noun2=pick(CAPTION_NOUNS),
        nouns=noun if noun.endswith("s") or noun in PLURAL.values() else PLURAL.get(noun, noun + "s"),
        verb=pick(VERBS), prep=pick(PREPOSITIONS), place=pick(PLACES),
        other=other, Other=other.capitalize(), other2=pick(OTHER_NOUNS),
    )  # fmt: skip
    if r > 0.97:
        text = text.replace(" ", "\n", 1) if r > 0.985 else text + " \u2764\ufe0f"
    return text


def _sizes(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    common = np.array([(640, 480), (1024, 768), (800, 800), (1200, 630), (300, 200), (150, 150), (1500, 400)])
    pick = common[rng.integers(len(common), size=n)]
    free = rng.integers(120, 1600, size=(n, 2))
    sizes = np.where((rng.random(n) < 0.5)[:, None], pick, free)
    return sizes[:, 0].astype(np.int64), sizes[:, 1].astype(np.int64)


def _scores(rng, n: int, mean: float) -> np.ndarray:
    """float32 scores on a 1/2048 grid (ties everywhere), 3 NaNs, and 5 equal values around the 30% cut.

    The cut is DataComp's: index int(0.3 n) of the descending sort, NaNs last.
    """
    scores = np.round(np.clip(rng.normal(mean, 0.05, n), 0.05, 0.5) * 2048) / 2048
    scores[rng.choice(n, size=min(3, n), replace=False)] = np.nan
    order = np.argsort(-scores, kind="stable")  # NaN sorts last
    cut = int(n * 0.3)
    scores[order[max(cut - 2, 0) : cut + 3]] = scores[order[cut]]
    return scores.astype(np.float32)


def _face_bboxes(rng, n: int) -> list[list[list[float]]]:
    """Mostly no face; ~15% of rows with one or two boxes (x0, y0, x1, y1 in [0, 1])."""
    counts = np.where(rng.random(n) < 0.15, rng.integers(1, 3, n), 0)
    return [[[float(v) for v in rng.random(4).round(4)] for _ in range(k)] for k in counts]


def _centroids(rng, clusters: int, dim: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Centroids with norms 0.5 to 2.5 (so L2-nearest != inner-product argmax); the last copies one."""
    directions = rng.normal(size=(clusters, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    centroids = (directions * rng.uniform(0.5, 2.5, size=(clusters, 1))).astype(np.float32)
    duplicate = (int(rng.integers(clusters - 1)), clusters - 1)
    centroids[duplicate[1]] = centroids[duplicate[0]]
    directions[duplicate[1]] = directions[duplicate[0]]
    return centroids, directions, duplicate


def _assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.argmax(x.astype(np.float64) @ centroids.astype(np.float64).T, axis=1)


def _embeddings(rng, n: int, directions: np.ndarray, centroids: np.ndarray, skip: int) -> np.ndarray:
    """float16 vectors near random centroid directions, redrawn until no near-tie of the argmax.

    A gap of at least 1e-3 between the best and second inner product (ignoring the copied
    centroid `skip`, whose ties are planted) keeps float32 and float64 argmaxes equal.
    """
    dim = directions.shape[1]
    out = np.empty((n, dim), dtype=np.float16)
    todo = np.arange(n)
    others = np.delete(centroids, skip, axis=0).astype(np.float64)
    while todo.size:
        aims = rng.integers(len(directions) - 1, size=todo.size)
        x = directions[aims] * rng.uniform(0.8, 1.2, size=(todo.size, 1))
        x += rng.normal(scale=0.6 / np.sqrt(dim), size=x.shape)
        out[todo] = x.astype(np.float16)
        top2 = np.sort(out[todo].astype(np.float64) @ others.T, axis=1)[:, -2:]
        todo = todo[top2[:, 1] - top2[:, 0] < 1e-3]
    return out


def _targets_and_features(rng, centroids, directions, duplicate) -> tuple[set[int], np.ndarray]:
    """~40% of the clusters as targets, with features that land (inner-product argmax) on each.

    A cluster no feature near its direction lands on is left out (a centroid inside the
    convex hull of the others wins no inner-product argmax), so the features' set of
    clusters is exactly the returned set. The copied centroid's original is always a target.
    """
    wanted = {duplicate[0], *rng.choice(duplicate[1], size=int(0.4 * len(centroids)), replace=False).tolist()}
    features, targets = [], set()
    for t in sorted(wanted):
        x = directions[t] + rng.normal(scale=0.15 / np.sqrt(directions.shape[1]), size=(6, directions.shape[1]))
        x = x.astype(np.float32)
        hit = x[_assign(x, centroids) == t]
        if len(hit):
            features.append(hit)
            targets.add(t)
    return targets, np.concatenate(features)


def _uids(rng, n: int) -> list[str]:
    """32 lower-case hex digits, unique; ~2% with leading zeros, plus the planted extremes."""
    uids = [rng.bytes(16).hex() for _ in range(n)]
    for i in rng.choice(n, size=max(n // 50, 1), replace=False):
        zeros = int(rng.integers(4, 30))
        uids[i] = "0" * zeros + uids[i][zeros:]
    uids[: len(PLANTED_UIDS)] = PLANTED_UIDS
    if len(set(uids)) != n:  # vanishingly rare: draw again
        return _uids(rng, n)
    return uids


def _schema(score_dtype: str, dim: int, embeddings: str) -> pa.Schema:
    """DataComp's metadata columns, plus the embedding columns with embeddings="columns"."""
    score = pa.from_numpy_dtype(np.dtype(score_dtype))
    fields = [("uid", pa.string()), ("url", pa.string()), ("text", pa.string())]
    fields += [("original_width", pa.int64()), ("original_height", pa.int64())]
    fields += [("clip_b32_similarity_score", score), ("clip_l14_similarity_score", score)]
    fields += [("face_bboxes", pa.list_(pa.list_(pa.float64()))), ("sha256", pa.string())]
    if embeddings == "columns":
        fields += [(name, pa.list_(pa.float32(), dim)) for name in ("l14_img", "l14_txt")]
    return pa.schema(fields)


def _wnids(wordnet_reader) -> tuple[list[int], str]:
    if wordnet_reader is None:
        return [offset for _, offset in IN21K.values()], "table"
    return [wordnet_reader.synset(name).offset() for name, _ in IN21K.values()], "wordnet"


def write_pool(
    directory: Path,
    *,
    shards: int = 3,
    rows_per_shard: int = 700,
    dim: int = 32,
    b32_dim: Optional[int] = None,
    clusters: int = 40,
    seed: int = 0,
    embeddings: str = "npz",
    compressed_npz: bool = False,
    score_dtype: str = "float32",
    wordnet_reader=None,
) -> Pool:
    """Write a pool of `shards` x `rows_per_shard` rows and its assets under `directory`.

    embeddings: "npz" (a same-named `.npz`: b32_img, b32_txt of `b32_dim` (default dim // 2),
    l14_img, l14_txt of `dim`, and dedup, all float16; `np.savez_compressed` when
    `compressed_npz`) or "columns" (l14_img, l14_txt as fixed-size-list<float32> columns).
    The wnid list comes from the built-in WordNet 3.0 offsets table (fast, and the same
    without WordNet); pass an nltk `wordnet_reader` to look the synsets up instead.
    """
    if embeddings not in ("npz", "columns"):
        raise ValueError(f"embeddings must be 'npz' or 'columns', not {embeddings!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = shards * rows_per_shard
    text = [_caption(rng) for _ in range(n)]
    width, height = _sizes(rng, n)
    uid = _uids(rng, n)
    # Planted rows at random places (after the planted uids), spread over the shards.
    cases = {name: (caption, 640, 480) for name, caption in PLANTED_TEXT.items()}
    cases.update({name: (CAPTION_TEXT, w, h) for name, (w, h) in PLANTED_SIZES.items()})
    if n < len(PLANTED_UIDS) + len(cases):
        raise ValueError(f"a pool needs at least {len(PLANTED_UIDS) + len(cases)} rows for its planted cases")
    slots = rng.choice(np.arange(len(PLANTED_UIDS), n), size=len(cases), replace=False)
    planted = {f"uid_{u}": u for u in PLANTED_UIDS}
    for slot, (name, (caption, w, h)) in zip(slots, cases.items(), strict=True):
        text[slot], width[slot], height[slot], planted[name] = caption, w, h, uid[slot]

    centroids, directions, duplicate = _centroids(rng, clusters, dim)
    targets, features = _targets_and_features(rng, centroids, directions, duplicate)
    l14_img = _embeddings(rng, n, directions, centroids, duplicate[1])
    l14_txt = (l14_img + rng.normal(scale=0.3 / np.sqrt(dim), size=l14_img.shape)).astype(np.float16)
    b32 = b32_dim or max(dim // 2, 1)
    columns = {
        "uid": uid,
        "url": [f"https://example.com/images/{u[:8]}.jpg" for u in uid],
        "text": text,
        "original_width": width,
        "original_height": height,
        "clip_b32_similarity_score": _scores(rng, n, 0.31).astype(score_dtype),
        "clip_l14_similarity_score": _scores(rng, n, 0.27).astype(score_dtype),
        "face_bboxes": _face_bboxes(rng, n),
        "sha256": [rng.bytes(32).hex() for _ in range(n)],
    }
    arrays = {
        "b32_img": rng.normal(size=(n, b32)).astype(np.float16),
        "b32_txt": rng.normal(size=(n, b32)).astype(np.float16),
        "l14_img": l14_img,
        "l14_txt": l14_txt,
        "dedup": rng.normal(size=(n, 16)).astype(np.float16),
    }
    parquet_paths, npz_paths, shard_uids = [], [], []
    for s in range(shards):
        part = slice(s * rows_per_shard, (s + 1) * rows_per_shard)
        table = {name: columns[name][part] for name in columns}
        stem = directory / f"{s:08d}"
        if embeddings == "columns":
            for name in ("l14_img", "l14_txt"):
                flat = pa.array(arrays[name][part].astype(np.float32).ravel())
                table[name] = pa.FixedSizeListArray.from_arrays(flat, dim)
        else:
            save = np.savez_compressed if compressed_npz else np.savez
            save(stem.with_suffix(".npz"), **{k: v[part] for k, v in arrays.items()})
            npz_paths.append(stem.with_suffix(".npz"))
        pq.write_table(pa.table(table, schema=_schema(score_dtype, dim, embeddings)), stem.with_suffix(".parquet"))
        parquet_paths.append(stem.with_suffix(".parquet"))
        shard_uids.append(uid[part])

    paths = {name: directory / name for name in ("centroids.npy", "target_clusters.txt", "imagenet_features.npy")}
    np.save(paths["centroids.npy"], centroids)
    paths["target_clusters.txt"].write_text("".join(f"{t}\n" for t in sorted(targets)))
    np.save(paths["imagenet_features.npy"], features)
    offsets, wnid_source = _wnids(wordnet_reader)
    wnids_path = directory / "imagenet_wnids.txt"
    wnids_path.write_text("".join(f"n{o:08d}\n" for o in offsets))

    row_columns = {k: list(v) for k, v in columns.items()}
    row_columns["original_width"] = [int(v) for v in width]
    row_columns["original_height"] = [int(v) for v in height]
    for name in ("clip_b32_similarity_score", "clip_l14_similarity_score"):
        row_columns[name] = [float(v) for v in columns[name]]
    row_columns["l14_img"], row_columns["l14_txt"] = list(l14_img), list(l14_txt)
    row_columns["shard"] = [i // rows_per_shard for i in range(n)]
    return Pool(
        directory=directory,
        parquet_paths=parquet_paths,
        npz_paths=npz_paths,
        uids=shard_uids,
        centroids_path=paths["centroids.npy"],
        target_clusters_path=paths["target_clusters.txt"],
        imagenet_features_path=paths["imagenet_features.npy"],
        imagenet_wnids_path=wnids_path,
        targets=targets,
        in21k_offsets=set(offsets),
        planted=planted,
        duplicate_centroid=duplicate,
        wnid_source=wnid_source,
        embeddings=embeddings,
        _columns=row_columns,
    )
