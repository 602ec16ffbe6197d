"""The first run's automaton build beside the launcher: it fills the cache the workers read, or writes nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipeline import curate
from beam_pipeline.curation import command
from beam_pipeline.launcher import prebuild
from helpers import prepared_config
from transforms.core.matching import DAACHORSE, PYAHOCORASICK, EntryMatcher
from transforms.runtime import automaton_cache

ENTRIES = ["dog", "hot dog", "cat"]


def _metadata(tmp_path, entries=ENTRIES):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(entries))
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


def _child(monkeypatch, argv, order=None, abandoned=None) -> int:
    """prebuild.main in this process, with `order` (a dict, or None: stdin closed) on its stdin;
    `abandoned`, a list, gets an item when the child gives up (the real one exits then)."""
    line = b"" if order is None else json.dumps(order).encode() + b"\n"
    monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=io.BytesIO(line)))
    return prebuild.main(argv, abandon=lambda: (abandoned if abandoned is not None else []).append(1))


def test_the_child_builds_the_matcher_the_workers_then_load(tmp_path, monkeypatch):
    path, sha = _metadata(tmp_path)
    cache = str(tmp_path / "cache")
    monkeypatch.chdir(tmp_path)  # a user curating from their own folder, not the repository
    child = prebuild.start(["--metadata", path, "--threshold", "5"])
    assert child is not None
    child.go(cache, sha, DAACHORSE)
    child.wait()
    assert os.path.exists(automaton_cache.cache_path(cache, sha, DAACHORSE))
    calls = []
    matcher = automaton_cache.cached_matcher(cache, sha, lambda: calls.append(1), num_entries=3, matcher=DAACHORSE)
    assert calls == [] and matcher.match("a hot dog and a cat") == [0, 1, 2]
    assert not os.path.exists(automaton_cache.cache_path(cache, sha, DAACHORSE) + ".lock")


def test_a_cancelled_child_writes_nothing(tmp_path):
    path, sha = _metadata(tmp_path)
    child = prebuild.start(["--metadata", path])
    child.cancel()
    assert child._process.poll() is not None
    assert not (tmp_path / "cache").exists()


def test_no_child_for_a_remote_list_or_none(tmp_path):
    assert prebuild.start(["--metadata", "gs://bucket/metadata.json"]) is None
    assert prebuild.start(["--balance", "none"]) is None


def test_no_order_no_file_and_the_child_gives_up_at_once(tmp_path, monkeypatch):
    path, sha = _metadata(tmp_path)
    abandoned = []
    assert _child(monkeypatch, ["--", "--metadata", path], None, abandoned) == 0
    assert not (tmp_path / "cache").exists() and abandoned == [1]
    order = {"cache_dir": str(tmp_path / "cache"), "sha256": sha, "matcher": DAACHORSE}
    abandoned.clear()
    assert _child(monkeypatch, ["--metadata", path], order, abandoned) == 0
    assert abandoned == []  # an order it carries out
    assert _child(monkeypatch, ["--metadata", path], order, abandoned) == 0
    assert abandoned == [1]  # the file is there now


def test_a_list_changed_since_the_child_read_it_is_not_written(tmp_path, monkeypatch):
    path, sha = _metadata(tmp_path)
    cache = str(tmp_path / "cache")
    changed = hashlib.sha256(json.dumps(ENTRIES + ["bird"]).encode()).hexdigest()  # what the run's checks saw
    abandoned = []
    order = {"cache_dir": cache, "sha256": changed, "matcher": DAACHORSE}
    assert _child(monkeypatch, ["--metadata", path], order, abandoned) == 0 and abandoned == [1]
    assert not os.path.exists(automaton_cache.cache_path(cache, sha, DAACHORSE))
    assert not os.path.exists(automaton_cache.cache_path(cache, changed, DAACHORSE))
    assert not os.path.exists(cache) or os.listdir(cache) == []  # and no lock left behind


def test_the_order_names_the_matcher_the_run_checked(tmp_path, monkeypatch):
    """The child guessed daachorse (an abbreviated --matcher, say); the run checked pyahocorasick."""
    path, sha = _metadata(tmp_path)
    cache = str(tmp_path / "cache")
    assert _child(monkeypatch, ["--metadata", path], {"cache_dir": cache, "sha256": sha, "matcher": PYAHOCORASICK}) == 0
    assert not os.path.exists(automaton_cache.cache_path(cache, sha, DAACHORSE))
    matcher = automaton_cache.cached_matcher(cache, sha, lambda: None, num_entries=3, matcher=PYAHOCORASICK)
    assert matcher.matcher == PYAHOCORASICK and matcher.match("hot dog") == [0, 1]


def test_a_builder_at_work_and_a_cached_file_are_left_alone(tmp_path, monkeypatch):
    path, sha = _metadata(tmp_path)
    cache = str(tmp_path / "cache")
    order = {"cache_dir": cache, "sha256": sha, "matcher": DAACHORSE}
    target = automaton_cache.cache_path(cache, sha, DAACHORSE)
    lock = automaton_cache.take_lock(target)  # this (live) process holds it
    assert _child(monkeypatch, ["--metadata", path], order) == 0
    assert not os.path.exists(target) and os.path.exists(lock)
    automaton_cache.release_lock(lock)
    assert _child(monkeypatch, ["--metadata", path], order) == 0
    written = os.stat(target).st_mtime_ns
    assert _child(monkeypatch, ["--metadata", path], order) == 0
    assert os.stat(target).st_mtime_ns == written


@pytest.mark.parametrize(
    "argv, value",
    [
        (["--metadata", "m.json", "--threshold", "5"], "m.json"),
        (["--threshold=5", "--metadata=a=b.json"], "a=b.json"),
        (["--metadata", "a.json", "--metadata=b.json"], "b.json"),  # the last one, as argparse takes it
        (["--metadata_x", "m.json"], None),
        (["--metadata"], None),
        (["--metad", "m.json"], None),  # abbreviated: found only by the real parser
    ],
)
def test_flag_value_reads_both_spellings(argv, value):
    assert prebuild.flag_value(argv, "--metadata") == value


def test_the_command_starts_the_child_before_parsing_and_hands_it_on(monkeypatch):
    started, ran = [], []
    argv = ["--metadata", "m.json", "--matcher=pyahocorasick", "--threshold", "5"]
    monkeypatch.setattr(prebuild, "start", lambda argv: started.append(argv) or "child")
    monkeypatch.setattr(curate, "run", lambda argv, early: ran.append((argv, early)) or 0)
    monkeypatch.setattr("sys.argv", ["curate", *argv])
    with pytest.raises(SystemExit) as exited:
        curate.main()
    assert exited.value.code == 0
    assert started == [argv] and ran == [(argv, "child")]


def _parquet(path, **columns):
    pq.write_table(pa.table(columns), path)
    return str(path)


def test_a_profile_is_read_from_a_local_parquet_pool_as_the_run_names_its_caption_column(tmp_path):
    texts = [f"a photo of dog {i}" for i in range(3000)]
    _parquet(tmp_path / "b.parquet", text=["later file"] * 3)
    _parquet(tmp_path / "a.parquet", text=texts, TEXT=["upper"] * 3000, URL=["u"] * 3000)
    pool = str(tmp_path / "*.parquet")
    assert prebuild.profile_captions(["--input", pool]) == texts[:2000]  # the first file, `text`
    assert prebuild.profile_captions(["--input", pool, "--text_field", "TEXT"], limit=2) == ["upper"] * 2
    assert prebuild.profile_captions(["--input", pool, "--input_preset", "img2dataset"], limit=1) == ["upper"]
    assert prebuild.profile_captions(["--input", str(tmp_path / "{a,b}.parquet")], limit=1) == texts[:1]
    (tmp_path / "c.jsonl").write_text('{"text": "x"}\n')
    for argv in (
        ["--input", str(tmp_path / "c.jsonl")],  # not Parquet: no profile
        ["--input", pool, "--text_field", "caption"],  # no such column
        ["--input", "gs://bucket/*.parquet"],
        ["--input", str(tmp_path / "missing-*.parquet")],
        ["--input", pool, "--input_format", "jsonl"],
        ["--threshold", "5"],
    ):
        assert prebuild.profile_captions(argv) == [], argv


def test_the_child_lays_the_automaton_out_for_the_pool(tmp_path, monkeypatch):
    path, sha = _metadata(tmp_path)
    texts = [f"a hot dog {i}, a cat" for i in range(50)]
    pool = _parquet(tmp_path / "pool.parquet", text=texts)
    cache = str(tmp_path / "cache")
    order = {"cache_dir": cache, "sha256": sha, "matcher": DAACHORSE}
    assert _child(monkeypatch, ["--input", pool, "--metadata", path], order) == 0
    built = automaton_cache.cached_matcher(cache, sha, lambda: None, num_entries=3)
    profiled, plain = EntryMatcher(ENTRIES, profile=texts), EntryMatcher(ENTRIES)
    assert built._automaton.serialize() == profiled._automaton.serialize() != plain._automaton.serialize()


class _FakeChild:
    def __init__(self, metadata_path):
        self.metadata_path = metadata_path
        self.calls = []

    def go(self, *args):
        self.calls.append(("go", *args))

    def cancel(self):
        self.calls.append(("cancel",))


def _argv(tmp_path, metadata):
    (tmp_path / "pool.jsonl").write_text('{"key": "a", "text": "a dog"}\n')
    return ["--input", str(tmp_path / "pool.jsonl"), "--metadata", metadata, "--output_dir", str(tmp_path / "out")]


def test_the_launcher_orders_a_local_first_run_and_cancels_the_rest(tmp_path, monkeypatch):
    path, sha = _metadata(tmp_path)
    cache = str(tmp_path / "cache")
    config, _ = prepared_config(_argv(tmp_path, path) + ["--cache_dir", cache])
    early = _FakeChild(path)
    assert command._prebuild_automaton(config, [], early) is early
    assert early.calls == [("go", cache, sha, DAACHORSE)]

    config, _ = prepared_config(_argv(tmp_path, path) + ["--cache_dir", "none"])  # nothing to build here
    early = _FakeChild(path)
    assert command._prebuild_automaton(config, [], early) is None and early.calls == [("cancel",)]

    os.makedirs(cache, exist_ok=True)
    automaton_cache.write(automaton_cache.cache_path(cache, sha, DAACHORSE), object())  # already cached
    config, _ = prepared_config(_argv(tmp_path, path) + ["--cache_dir", cache])
    early = _FakeChild(path)
    assert command._prebuild_automaton(config, [], early) is None and early.calls == [("cancel",)]


def test_a_child_for_another_list_is_replaced(tmp_path, monkeypatch):
    path, sha = _metadata(tmp_path)
    cache = str(tmp_path / "cache")
    config, _ = prepared_config(_argv(tmp_path, path) + ["--cache_dir", cache])
    early, fresh = _FakeChild("other.json"), _FakeChild(path)
    started = []
    monkeypatch.setattr(prebuild, "start", lambda argv: started.append(argv) or fresh)
    assert command._prebuild_automaton(config, ["--metadata", "other.json"], early) is fresh
    assert prebuild.flag_value(started[0], "--metadata") == path  # the checked list, not the first seen
    assert early.calls == [("cancel",)] and fresh.calls == [("go", cache, sha, DAACHORSE)]


def test_a_list_the_checks_refuse_is_never_written(tmp_path, capsys):
    """The child skips the entry-id checks (the launcher's); a run they stop sends no order."""
    path, _ = _metadata(tmp_path, ["dog", "cat", "dog"])  # a repeated entry would shift ids
    cache = tmp_path / "cache"
    argv = _argv(tmp_path, path) + ["--cache_dir", str(cache)]
    assert curate.run(argv, prebuild.start(argv)) == 2
    assert "would corrupt entry ids" in capsys.readouterr().err
    assert not cache.exists() or not any(cache.glob("automaton-*"))


def test_a_list_with_a_non_string_entry_ends_the_child_without_a_traceback(tmp_path, monkeypatch):
    """The child cannot pad 7 as an entry: it leaves the one-line error to the run's checks (issue 34, 1)."""
    path, _ = _metadata(tmp_path, ["dog", 7])
    abandoned = []
    assert _child(monkeypatch, ["--metadata", path], None, abandoned) == 0
    assert not (tmp_path / "cache").exists()
