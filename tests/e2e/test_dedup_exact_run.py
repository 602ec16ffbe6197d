"""--dedup url,text through the command line (docs/dedup.md, sections 1 and 4).

A generated parquet pool with planted url and text duplicates (schemes, `www.`, tracking
queries, trailing slashes, case and white space; repeated sample keys; null and empty
values). Checked against a brute-force oracle (tests/dedup_reference.py, plain Python):
duplicates/ row by row, the subset, stats.json and the accounting; the same outputs on two
workers, in process, with another batch size and another split of the same rows into files;
with MetaCLIP balancing after it, the entry counts are those of the survivors alone.
"""

from __future__ import annotations

import json
import random

import dedup_reference as ref
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate

TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
SEED = 11
HOSTS = ["http://", "https://", "https://www.", "http://www.", "", "HTTP://"]
TAILS = ["", "/", "//", "?utm_source=x", "?ref=abc", "?feed=1", "?id=3", " "]
WORDS = ["photo", "number 1", "number 2", "dog", "cat", "red car"]


def _records(n: int, rnd: random.Random) -> list[dict]:
    records = []
    for _ in range(n):
        page = rnd.randrange(n // 3)
        url = rnd.choice(HOSTS) + f"img.example.com/p{page}" + rnd.choice(TAILS)
        url = rnd.choice([url, url, url, url.replace("/p", "/ p"), url.replace("/p", "\t/p"), None, "  "])
        words = " ".join(rnd.sample(WORDS, 2)) + f" {rnd.randrange(n // 6)}"
        text = rnd.choice([words, words.upper(), "  " + words.replace(" ", "   ") + "\n"] * 6 + ["", " \t", None])
        key = f"{rnd.randrange(n * 4):032x}"  # some sample keys repeat: their ties go to the earlier position
        records.append({"uid": key, "url": url, "text": text})
    return records


def write_pool(directory, records: list[dict], files: int):
    """The records, in order, split into `files` parquet files whose sorted order is the records' order."""
    directory.mkdir(parents=True)
    per = -(-len(records) // files)
    for f in range(files):
        pq.write_table(pa.Table.from_pylist(records[f * per : (f + 1) * per]), directory / f"{f:05d}.parquet")
    return directory


def read_by_the_reader(record: dict) -> bool:
    """Whether the reader accepts the record (a null, empty or blank caption is rejected before any stage)."""
    return record["text"] is not None and bool(record["text"].strip())


def oracle(records: list[dict], seed: int) -> dict:
    """{position: (kind, survivor position)} of url, then text on url's survivors; brute force."""
    keys = [r["uid"] for r in records]
    out = {}
    alive = [i for i, r in enumerate(records) if read_by_the_reader(r)]
    for kind, key_of, field in (("url", ref.url_key, "url"), ("text", ref.text_key, "text")):
        sub = ref.exact_survivors(
            [key_of(records[i][field]) for i in alive], [keys[i] for i in alive], [(i,) for i in alive], seed
        )
        for j, s in enumerate(sub):
            if s >= 0:
                out[alive[j]] = (kind, alive[s])
        alive = [i for j, i in enumerate(alive) if sub[j] < 0]
    return out


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup")
    records = _records(900, random.Random(5))
    (root / "metadata.json").write_text(json.dumps(WORDS + ["number 33"]))
    return root, records, write_pool(root / "three", records, 3), write_pool(root / "five", records, 5)


def _run(directory, out, *flags) -> int:
    argv = ["--input", str(directory / "*.parquet"), "--input_preset", "datacomp", "--output_dir", str(out)]
    return curate.run([*argv, "--num_shards", "4", "--handoff", "none", "--seed", str(SEED), *flags])


def _table(directory) -> pa.Table:
    return pq.read_table(directory) if directory.exists() else pa.table({})


def test_duplicates_subset_stats_and_accounting_equal_the_oracle_on_every_runner_split_and_batch(pool, tmp_path):
    root, records, three, five = pool
    want = oracle(records, SEED)
    by_kind = {kind: sum(1 for k, _ in want.values() if k == kind) for kind in ("url", "text")}
    assert by_kind["url"] > 100 and by_kind["text"] > 30  # the pool plants both kinds
    runs = {
        "two_workers": (three, [*TWO_WORKERS]),
        "in_process": (three, []),
        "batch_7_five_files": (five, ["--batch_size", "7"]),
    }
    outputs = {}
    for name, (directory, flags) in runs.items():
        out = tmp_path / name
        assert _run(directory, out, "--dedup", "url,text", "--balance", "none", *flags) == 0, name
        outputs[name] = out
    reference = outputs["two_workers"]
    duplicates = _table(reference / "duplicates").to_pylist()
    got = {(d["key"], d["kind"], d["duplicate_of"], d["caption"], d["duplicate_of_caption"]) for d in duplicates}
    expected = {
        (records[i]["uid"], kind, records[s]["uid"], records[i]["text"], records[s]["text"])
        for i, (kind, s) in want.items()
    }
    assert len(duplicates) == len(want) and got == expected
    assert {d["similarity"] for d in duplicates} == {1.0}
    accepted = [i for i, r in enumerate(records) if read_by_the_reader(r)]
    survivors = sorted(records[i]["uid"] for i in accepted if i not in want)
    assert sorted(_table(reference / "subset").column("key").to_pylist()) == survivors
    stats = json.loads((reference / "stats.json").read_text())
    assert stats["deduplicated_by_kind"] == by_kind and stats["records_deduplicated"] == len(want)
    assert stats["judged_by_kind"] == {"url": len(accepted), "text": len(accepted) - by_kind["url"]}
    rejected = len(records) - len(accepted)
    assert stats["accounting"] == {"read": 900, "rejected": rejected, "deduplicated": len(want), "kept": len(survivors)}
    assert stats["records_read"] == 900 and not (reference / "filtered").exists()
    for name, out in outputs.items():  # byte-identical outputs whatever the runner, split or batch size
        for part in sorted((reference / "duplicates").iterdir()) + sorted((reference / "subset").iterdir()):
            other = out / part.parent.name / part.name
            assert other.read_bytes() == part.read_bytes(), f"{name}: {part.parent.name}/{part.name}"


def test_metaclip_after_dedup_counts_only_the_survivors(pool, tmp_path):
    """Balancing's entry counts and kept set equal a run over a pool holding only the oracle's survivors."""
    root, records, three, _ = pool
    want = oracle(records, SEED)
    metaclip = ["--metadata", str(root / "metadata.json"), "--threshold", "20", *TWO_WORKERS]
    assert _run(three, tmp_path / "dedup", "--dedup", "url,text", *metaclip) == 0
    survivors = [r for i, r in enumerate(records) if i not in want and read_by_the_reader(r)]
    alone = write_pool(tmp_path / "survivors", survivors, 2)
    assert _run(alone, tmp_path / "alone", *metaclip) == 0
    counts = json.loads((tmp_path / "dedup" / "entry_counts.json").read_text())
    assert counts == json.loads((tmp_path / "alone" / "entry_counts.json").read_text())
    kept = sorted(_table(tmp_path / "dedup" / "subset").column("key").to_pylist())
    assert kept == sorted(_table(tmp_path / "alone" / "subset").column("key").to_pylist())
    stats = json.loads((tmp_path / "dedup" / "stats.json").read_text())
    accounting = stats["accounting"]
    assert list(accounting) == ["read", "rejected", "deduplicated", "balanced_out", "kept"]
    assert accounting["deduplicated"] == len(want) and accounting["kept"] == len(kept)
    assert sum(v for k, v in accounting.items() if k != "read") == accounting["read"] == 900
    # matches/ holds every record that reached balancing: none of the duplicates
    assert _table(tmp_path / "dedup" / "matches").num_rows == len(survivors)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dedup", "url,urls"], "error: --dedup takes a comma-separated list of url, text, semantic; got 'url,urls'"),
        (["--dedup", "text", "--semdedup_eps", "0.1"], "error: --semdedup_eps is for --dedup semantic"),
        (["--dedup", "text", "--max_cluster_size", "10"], "error: --max_cluster_size is for --dedup semantic"),
        (["--dedup", "semantic"], "error: --dedup semantic needs one of --semdedup_centroids FILE.npy"),
        (
            ["--dedup", "semantic", "--semdedup_clusters", "4", "--semdedup_eps", "0"],
            "error: --semdedup_eps must be above 0 and below 1, got '0'",
        ),
        (
            ["--dedup", "semantic", "--semdedup_centroids", "c.npy", "--semdedup_iterations", "3"],
            "error: --semdedup_iterations is for --semdedup_clusters K",
        ),
    ],
)
def test_bad_flags_exit_2_with_one_line(pool, tmp_path, capsys, flags, message):
    _, _, three, _ = pool
    assert _run(three, tmp_path / "out", "--balance", "none", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_dedup_url_needs_a_url_column(tmp_path, capsys):
    directory = tmp_path / "pool"
    directory.mkdir()
    pq.write_table(pa.table({"key": ["a", "b"], "text": ["x", "x"]}), directory / "0.parquet")
    argv = ["--input", str(directory / "*.parquet"), "--balance", "none", "--dedup", "url"]
    assert curate.run([*argv, "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --dedup url: the URL column 'url' is not a column of the input (columns: )"], err
