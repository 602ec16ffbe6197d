"""Caption pools of any size for the benchmarks: Parquet files with `key`, `text`, `url`.

    python -m benchmarks.make_pool --captions 1000000 --files 8 --out /tmp/pool [--source laion|synthetic]

laion (the default when ../shared is there): the 10k LAION-400M alt-texts of
../shared/data/laion400m_sample_10k.parquet, replicated in order (row i is sample row
i mod 10,000, empty texts left out), each copy with a fresh unique key, so the pool has
exactly the real caption length distribution at any size.

synthetic (no ../shared needed): captions whose word count follows the LAION sample's
(log-normal, median 8 words, mean ~9, a long tail up to 300 words) and whose words are
drawn by a Zipf law from a generated vocabulary (English function words first, then
made-up words). `synthetic_metadata()` gives a matching 500k-entry list (unigrams,
bigrams, titles) so that a user without ../shared can run every benchmark; captions
match ~5 entries each, like the LAION sample against the 500k benchmark list.

Everything is deterministic: row i of a pool depends on the source, the seed and i only
(not on the number of files). `write_pool` and `ensure_pool` are what the other
benchmark scripts import.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
LAION_SAMPLE = SHARED / "data" / "laion400m_sample_10k.parquet"
BENCH_METADATA = SHARED / "bench" / "metadata_500k.json.gz"
SOURCES = ("laion", "synthetic")
MANIFEST = "pool.json"
# Rows of the synthetic source are generated in chunks seeded by (seed, chunk index).
CHUNK = 65_536

# The LAION sample's word counts (str.split) are close to log-normal: ln(words) has
# mean 2.00 and standard deviation 0.66 (median 8, mean 9.2, 99th percentile 39).
WORDS_LOG_MEAN = 2.0
WORDS_LOG_SIGMA = 0.66
MAX_WORDS = 300
VOCABULARY = 400_000
ZIPF_EXPONENT = 1.0
FUNCTION_WORDS = (
    "of in and the for with by to a on at from The A is - | , . & image photo stock vector "
    "new black white 2 1 3 set free art red blue design old one two big small"
).split()
_ONSETS = "b c d f g h j k l m n p r s t v w z br ch cl cr dr fl gr pl pr sh st th tr".split()
_NUCLEI = "a e i o u y ai au ea ee ie oa oo ou".split()
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng"]


@dataclass
class Pool:
    """A written pool: where its files are and what they hold."""

    directory: str
    source: str
    captions: int
    files: int
    seed: int
    paths: list

    @property
    def glob(self) -> str:
        return str(Path(self.directory) / "part-*.parquet")


def laion_base() -> pa.Table:
    """The LAION sample's usable rows: (text, url), texts that are not empty after strip()."""
    if not LAION_SAMPLE.exists():
        raise FileNotFoundError(f"{LAION_SAMPLE} is absent: use --source synthetic")
    table = pq.read_table(LAION_SAMPLE, columns=["TEXT", "URL"])
    texts = table.column("TEXT")
    usable = pc.and_(pc.is_valid(texts), pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0))
    table = table.filter(usable)
    return pa.table({"text": table.column("TEXT").combine_chunks(), "url": table.column("URL").combine_chunks()})


@functools.lru_cache(maxsize=2)
def synthetic_vocabulary(size: int = VOCABULARY, seed: int = 0) -> tuple:
    """`size` distinct words, most frequent first: function words, then made-up words."""
    rng = np.random.default_rng([seed, 1])
    syllables = [o + n + c for o, n, c in itertools.product(_ONSETS, _NUCLEI, _CODAS)]
    words = list(dict.fromkeys(FUNCTION_WORDS))
    seen = set(words)
    while len(words) < size:
        lengths = rng.choice([1, 1, 2, 2, 2, 3], size=size)
        picks = rng.integers(0, len(syllables), size=(size, 4))
        for length, row in zip(lengths, picks, strict=True):
            word = "".join(syllables[i] for i in row[:length])
            if word not in seen:
                seen.add(word)
                words.append(word)
                if len(words) == size:
                    break
    return tuple(words)


def _zipf_cumulative(size: int, exponent: float = ZIPF_EXPONENT) -> np.ndarray:
    weights = np.arange(1, size + 1, dtype=np.float64) ** -exponent
    cumulative = np.cumsum(weights)
    return cumulative / cumulative[-1]


class _Synthetic:
    """Generator of synthetic caption chunks (vocabulary built once)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.vocabulary = pa.array(synthetic_vocabulary(seed=seed))
        self.cumulative = _zipf_cumulative(len(self.vocabulary))

    def chunk(self, index: int) -> pa.Array:
        rng = np.random.default_rng([self.seed, 2, index])
        counts = np.clip(np.rint(np.exp(rng.normal(WORDS_LOG_MEAN, WORDS_LOG_SIGMA, CHUNK))), 1, MAX_WORDS).astype(
            np.int64
        )
        offsets = np.concatenate([[0], np.cumsum(counts)])
        ranks = np.searchsorted(self.cumulative, rng.random(int(offsets[-1])), side="right")
        ranks = np.minimum(ranks, len(self.vocabulary) - 1)
        words = self.vocabulary.take(pa.array(ranks))
        return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), words), " ")

    def texts(self, start: int, stop: int) -> pa.Array:
        pieces = []
        for index in range(start // CHUNK, (stop - 1) // CHUNK + 1 if stop > start else start // CHUNK):
            chunk = self.chunk(index)
            begin = max(start, index * CHUNK) - index * CHUNK
            end = min(stop, (index + 1) * CHUNK) - index * CHUNK
            pieces.append(chunk.slice(begin, end - begin))
        return pa.concat_arrays(pieces) if pieces else pa.array([], pa.string())


def synthetic_metadata(entries: int = 500_000, seed: int = 0) -> list:
    """A metadata list for synthetic pools: 70% unigrams (a random 60% of the vocabulary
    by rank), 25% bigrams and 5% titles of 3-6 words, drawn from frequent words."""
    rng = np.random.default_rng([seed, 3])
    vocabulary = synthetic_vocabulary(seed=seed)
    unigram_count = int(entries * 0.70)
    chosen = np.flatnonzero(rng.random(len(vocabulary)) < 0.6)[:unigram_count]
    result = [vocabulary[i] for i in chosen]
    seen = set(result)
    cumulative = _zipf_cumulative(len(vocabulary), 0.8)
    while len(result) < entries:
        lengths = np.where(rng.random(entries) < 0.84, 2, rng.integers(3, 7, entries))
        ranks = np.minimum(np.searchsorted(cumulative, rng.random((entries, 6)), side="right"), len(vocabulary) - 1)
        for length, row in zip(lengths, ranks, strict=True):
            entry = " ".join(vocabulary[i] for i in row[:length])
            if entry not in seen:
                seen.add(entry)
                result.append(entry)
                if len(result) == entries:
                    break
    return result


class PoolSource:
    """Rows [start, stop) of a pool as an Arrow table (key, text, url)."""

    def __init__(self, source: str, seed: int = 0):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        self.source = source
        self.seed = seed
        if source == "laion":
            self._base = laion_base()
        else:
            self._synthetic = _Synthetic(seed)

    def rows(self, start: int, stop: int) -> pa.Table:
        keys = pa.array([f"{self.source}-{self.seed}-{i:012d}" for i in range(start, stop)], pa.string())
        if self.source == "laion":
            # Row i is sample row i mod len(sample): the pool's length distribution is the sample's.
            indices = pa.array(np.arange(start, stop, dtype=np.int64) % self._base.num_rows)
            text = self._base.column("text").take(indices)
            url = self._base.column("url").take(indices)
        else:
            text = self._synthetic.texts(start, stop)
            url = pa.array([f"https://img.example.com/{i:012d}.jpg" for i in range(start, stop)], pa.string())
        return pa.table({"key": keys, "text": text, "url": url})

    def texts(self, count: int) -> list:
        """The first `count` texts of the pool, as Python strings (for in-process loops)."""
        return self.rows(0, count).column("text").to_pylist()


def default_source() -> str:
    return "laion" if LAION_SAMPLE.exists() else "synthetic"


def write_pool(out: Path, captions: int, files: int, source: str = "laion", seed: int = 0) -> Pool:
    """Write `captions` rows into `files` Parquet files under `out` (replacing what is there);
    `pool.json`, written last, describes them."""
    if captions < 1 or files < 1:
        raise ValueError("captions and files must be >= 1")
    files = min(files, captions)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    generator = PoolSource(source, seed)
    per_file = math.ceil(captions / files)
    paths = []
    for index in range(files):
        start, stop = index * per_file, min(captions, (index + 1) * per_file)
        if start >= stop:
            break
        path = out / f"part-{index:05d}-of-{files:05d}.parquet"
        writer = None
        for begin in range(start, stop, CHUNK):
            table = generator.rows(begin, min(stop, begin + CHUNK))
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=CHUNK)
        writer.close()
        paths.append(str(path))
    pool = Pool(str(out), source, captions, len(paths), seed, paths)
    (out / MANIFEST).write_text(json.dumps(asdict(pool), indent=1))
    return pool


def ensure_pool(cache_dir: Path, captions: int, files: int, source: str = "laion", seed: int = 0) -> Pool:
    """The pool from `cache_dir/<source>-<captions>-<files>-s<seed>`, written there if absent."""
    directory = Path(cache_dir) / f"{source}-{captions}-{files}-s{seed}"
    manifest = directory / MANIFEST
    if manifest.exists():
        pool = Pool(**json.loads(manifest.read_text()))
        if all(os.path.exists(p) for p in pool.paths):
            return pool
    return write_pool(directory, captions, files, source, seed)


def ensure_synthetic_metadata(directory: Path, entries: int = 500_000, seed: int = 0) -> Path:
    """synthetic_metadata() as a JSON file under `directory` (written once)."""
    path = Path(directory) / f"synthetic_metadata_{entries}_s{seed}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(synthetic_metadata(entries, seed)))
        tmp.replace(path)
    return path


def parse_count(text: str) -> int:
    """'100k' -> 100000, '4M' -> 4000000, '2500' -> 2500."""
    text = text.strip().lower().replace("_", "")
    factor = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000, "b": 1_000_000_000}.get(text[-1:], 1)
    number = float(text[:-1] if factor > 1 else text)
    if number <= 0 or number * factor != int(number * factor):
        raise ValueError(f"not a positive whole count: {text!r}")
    return int(number * factor)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", required=True, type=parse_count, help="rows to write (100k, 4M, ... accepted)")
    parser.add_argument("--files", type=int, default=8, help="Parquet files to spread them over (default: 8)")
    parser.add_argument("--out", required=True, help="directory to write (its contents are replaced)")
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default=default_source(),
        help="laion: the 10k LAION alt-texts replicated (needs ../shared); synthetic: generated "
        "(default: laion when ../shared is present)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of keys and synthetic texts (default: 0)")
    parser.add_argument(
        "--metadata_out",
        default=None,
        help="also write the synthetic 500k-entry metadata list matching synthetic pools to this JSON file",
    )
    args = parser.parse_args(argv)
    pool = write_pool(Path(args.out), args.captions, args.files, args.source, args.seed)
    print(f"wrote {pool.captions:,} {pool.source} captions in {pool.files} files: {pool.glob}")
    if args.metadata_out:
        Path(args.metadata_out).write_text(json.dumps(synthetic_metadata(seed=args.seed)))
        print(f"wrote the synthetic metadata list: {args.metadata_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
