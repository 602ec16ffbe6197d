"""The documented commands, run as written: README.md's and docs/*.md's blocks marked runnable.

A block marked `<!-- doc-test: ... -->` (docs/doc-tests.md) is run by bash, one command at a
time, in a fresh folder holding the small stand-in data its marker names, as a user would
run it there: through the command line, reading and writing files only. A command must exit
0 (or the marker's `exit=`), print no traceback and no WARNING line, and write what the
marker names; a transcript (`$ ` lines) must print what the doc shows. A doc change that
breaks a command fails here.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datacomp_pool import write_pool
from helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"^\s*<!-- doc-test:(.*)-->\s*$")
FENCE = re.compile(r"^(\s*)```")


@dataclass
class Command:
    text: str  # what bash runs
    expected: list[str] | None = None  # a transcript's output lines; None: not shown


@dataclass
class Block:
    where: str  # README.md:58
    standins: list[str]
    skip: list[str]
    exit: int
    writes: list[str]
    commands: list[Command]


def _attributes(text: str) -> dict[str, str]:
    attributes = {}
    for part in shlex.split(text):
        name, _, value = part.partition("=")
        attributes[name] = value
    return attributes


def _commands(lines: list[str]) -> list[Command]:
    """A block's commands: `\\` continues a line, a here-document goes with its command;
    in a transcript (any `$ ` line) the lines after a command are its expected output."""
    transcript = any(line.startswith("$ ") for line in lines)
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if transcript and not line.startswith("$ "):
            commands[-1].expected.append(line)
            continue
        line = line[2:] if transcript else line
        if not transcript and (not line.strip() or line.lstrip().startswith("#")):
            continue
        text = line
        while text.endswith("\\") and i < len(lines):
            text, i = text + "\n" + lines[i], i + 1
        heredoc = re.search(r"<<-?'?(\w+)'?", text)
        if heredoc:
            while i < len(lines) and lines[i] != heredoc.group(1):
                text, i = text + "\n" + lines[i], i + 1
            text, i = text + "\n" + heredoc.group(1), i + 1
        commands.append(Command(text, [] if transcript else None))
    return commands


def documented_blocks() -> list[Block]:
    blocks = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        in_fence = False
        for number, line in enumerate(lines):
            if FENCE.match(line):
                in_fence = not in_fence
            marker = None if in_fence else MARKER.match(line)  # a marker shown inside a block is an example
            if not marker:
                continue
            fence = FENCE.match(lines[number + 1]) if number + 1 < len(lines) else None
            assert fence, f"{doc.name}:{number + 1}: a doc-test marker must come right before a fenced block"
            indent, body = len(fence.group(1)), []
            for inner in lines[number + 2 :]:
                if FENCE.match(inner):
                    break
                body.append(inner[indent:])
            attributes = _attributes(marker.group(1))
            blocks.append(
                Block(
                    where=f"{doc.relative_to(REPO)}:{number + 3}",
                    standins=[s for s in attributes.get("standin", "").split(",") if s],
                    skip=[s for s in attributes.get("skip", "").split(";") if s],
                    exit=int(attributes.get("exit", "0")),
                    writes=[s for s in attributes.get("writes", "").split(";") if s],
                    commands=_commands(body),
                )
            )
    return blocks


BLOCKS = documented_blocks()


# ---- stand-ins: small generated files with the names the documented commands use ----

WORDS = "dog cat photo car tree house bird beach flower city".split()


def _captions(rng, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=4)) for _ in range(n)]


def _metadata(folder: Path, name: str = "metadata.json") -> None:
    (folder / name).write_text(json.dumps(WORDS[:6] + ["hot dog"]))


def _laion(folder: Path, rng) -> None:
    (folder / "laion").mkdir()
    for shard in range(2):
        texts = _captions(rng, 200)
        urls = [f"https://example.com/{shard}/{i}.jpg" for i in range(200)]
        pq.write_table(pa.table({"URL": urls, "TEXT": texts}), folder / "laion" / f"part-{shard:05d}.parquet")
    _metadata(folder)


def _cc3m(folder: Path, rng) -> None:
    (folder / "cc3m").mkdir()
    rows = [f"{text}\thttps://example.com/{i}.jpg" for i, text in enumerate(_captions(rng, 200))]
    (folder / "cc3m" / "train-0.tsv").write_text("\n".join(rows) + "\n")
    _metadata(folder)


def _datacomp(folder: Path, rng) -> None:
    pool = write_pool(folder / "pool" / "metadata", shards=2, rows_per_shard=300, dim=32, clusters=40, seed=3)
    shutil.copy(pool.centroids_path, folder / "l14_centroids.npy")
    shutil.copy(pool.target_clusters_path, folder / "in1k_clusters.txt")
    np.save(folder / "classes_l14.npy", rng.normal(size=(4, 32)).astype(np.float32))
    _metadata(folder)


def _jsonl_pool(folder: Path, rng) -> None:
    (folder / "pool").mkdir()
    for shard in range(2):
        lines = [json.dumps({"key": f"{shard}-{i}", "text": t}) for i, t in enumerate(_captions(rng, 100))]
        (folder / "pool" / f"part-{shard}.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copy(folder / "pool" / "part-0.jsonl", folder / "pool.jsonl")
    _metadata(folder)
    _metadata(folder, "md.json")


def _worldwide(folder: Path, rng) -> None:
    english = _captions(rng, 150)
    chinese = ["一只狗 在 海滩", "城市 的 照片", "一只猫 和 一棵树"] * 50
    lang = ["en"] * len(english) + ["zh-cn"] * len(chinese)
    (folder / "pool").mkdir()
    pq.write_table(pa.table({"text": english + chinese, "lang": lang}), folder / "pool" / "part-0.parquet")
    lists = {"en": WORDS, "zh": ["一只狗", "城市", "一只猫"]}
    (folder / "metadata_worldwide").mkdir()
    for language, entries in lists.items():
        (folder / "metadata_worldwide" / f"{language}.json").write_text(json.dumps(entries, ensure_ascii=False))
    shutil.copytree(folder / "metadata_worldwide", folder / "metadata_by_language")
    (folder / "metadata_worldwide.json.gz").write_bytes(gzip.compress(json.dumps(lists).encode("utf-8")))


def _datacomp_flat(folder: Path, rng) -> None:
    """A DataComp pool's shards straight in pool/, its assets beside them (docs/datacomp.md, selection.md)."""
    write_pool(folder / "pool", shards=2, rows_per_shard=300, dim=32, clusters=40, seed=4)
    np.save(folder / "imagenet_classes_l14.npy", rng.normal(size=(4, 32)).astype(np.float32))
    _metadata(folder)


def _webdataset(folder: Path, rng) -> None:
    """pool/000000.tar .. 000099.tar, two samples each: `.txt` caption, uid and url in `.json`, an image."""
    (folder / "pool").mkdir()
    for shard in range(100):
        with tarfile.open(folder / "pool" / f"{shard:06d}.tar", "w") as tar:
            for sample in range(2):
                key = f"{shard:06d}{sample:04d}"
                members = {
                    "txt": " ".join(rng.choice(WORDS, size=4)).encode(),
                    "json": json.dumps({"uid": f"{shard * 2 + sample:032x}", "url": f"https://x/{key}.jpg"}).encode(),
                    "jpg": b"\xff\xd8\xff\xd9",
                }
                for extension, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    _metadata(folder)


def _repository_files(folder: Path, rng) -> None:
    """What `--setup_file=./setup.py` packs, copied: the sdist's build files stay out of the repository."""
    for name in ("setup.py", "MANIFEST.in", "requirements.txt", "README.md"):
        shutil.copy(REPO / name, folder / name)
    for package in ("beam_pipeline", "transforms"):
        shutil.copytree(REPO / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))


def _metadata_file(folder: Path, rng) -> None:
    (folder / "METADATA").write_text(json.dumps([f"entry {i}" for i in range(1000)]))
    (folder / ".venv").symlink_to(Path(sys.prefix))


STANDINS = {
    "laion": _laion,
    "cc3m": _cc3m,
    "datacomp": _datacomp,
    "jsonl-pool": _jsonl_pool,
    "worldwide": _worldwide,
    "datacomp-flat": _datacomp_flat,
    "webdataset": _webdataset,
    "repository": _repository_files,
    "metadata-file": _metadata_file,
    "empty": lambda folder, rng: None,
}


# ---- running and comparing ----


def _matches(expected: list[str], actual: list[str]) -> bool:
    """`...` alone stands for any lines; a line ending in `...` for any line it begins."""
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head == "...":
        return any(_matches(rest, actual[i:]) for i in range(len(actual) + 1))
    if not actual:
        return False
    same = actual[0].startswith(head[:-3]) if head.endswith("...") else actual[0] == head
    return same and _matches(rest, actual[1:])


def _environment(temporary: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if temporary is not None:  # e.g. the Dataflow stager's sdist and pickles: removed with the test's folder
        env["TMPDIR"] = str(temporary)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` is this one
    env["PYTHONPATH"] = str(REPO)
    return env


def run_block(block: Block, folder: Path) -> list[str]:
    """Run the block's commands in `folder`; return the commands skipped."""
    rng = np.random.default_rng(0)
    temporary = folder.parent / f"{folder.name}-tmp"
    temporary.mkdir()
    for standin in block.standins:
        STANDINS[standin](folder, rng)
    skipped = []
    for i, command in enumerate(block.commands):
        if any(text in command.text for text in block.skip):
            skipped.append(command.text)
            continue
        last = i == len(block.commands) - 1
        run = subprocess.run(
            ["bash", "-c", command.text + (" 2>&1" if command.expected is not None else "")],
            cwd=folder,
            env=_environment(temporary),
            capture_output=True,
            text=True,
            timeout=240,
        )
        said = f"{block.where}: `{command.text}`\n--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}"
        assert run.returncode == (block.exit if last else 0), said
        assert "Traceback" not in run.stderr and "WARNING" not in run.stderr, said
        if command.expected is not None:
            assert _matches(command.expected, run.stdout.splitlines()), (
                "the doc shows:\n" + "\n".join(command.expected) + f"\n{said}"
            )
    for pattern in block.writes:
        assert list(folder.glob(pattern)), f"{block.where}: nothing written at {pattern}"
    return skipped


def test_the_docs_mark_runnable_blocks_of_known_stand_ins():
    assert len(BLOCKS) >= 8
    for block in BLOCKS:
        assert block.commands, block.where
        assert set(block.standins) <= set(STANDINS), f"{block.where}: unknown stand-in {block.standins}"


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_a_documented_block_runs_as_written(block, tmp_path):
    (tmp_path / "work").mkdir()
    skipped = run_block(block, tmp_path / "work")
    ran = len(block.commands) - len(skipped)
    print(f"\n{block.where}: {ran} commands run, {len(skipped)} skipped")
    assert ran >= 1


def test_the_cache_dir_figures_of_help_and_readme_agree():
    """`--help` and the README's option table give the same sizes and load times (issue 34, item 5)."""
    help_text = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.curate", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_environment(),
        timeout=120,
        check=True,
    ).stdout
    described = " ".join(help_text.split("--cache_dir DIR|none")[-1].split("\n  --", 1)[0].split())
    row = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `--cache_dir"))
    figure = re.compile(r"~?\d+(?:\.\d+)? (?:MB|s)\b")
    assert figure.findall(described) and set(figure.findall(described)) <= set(figure.findall(row))
