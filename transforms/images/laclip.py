"""LaCLIP's released rewrites as `--extra_texts` files.

LaCLIP (github.com/LijieFan/LaCLIP) releases its rewritten captions as text files, one per
rewriting source (ChatGPT, Bard, MSCOCO, human), one rewrite a line, in the row order of
the training CSV. This turns them into JSON lines `{"key": ..., "texts": [...]}` keyed by
the sample key the curation gives each CSV row: a key column of the CSV (`--key_column`),
or, for a CSV without one, the key the reader makes, `<file name>:<row>` (row from 0, the
header not counted; `--file_key NAME`). No Beam import.

    python -m transforms.images.laclip --csv cc3m.csv --key_column key \\
        --rewrites chatgpt.txt bard.txt mscoco.txt human.txt --out rewrites.jsonl

Files of another length than the CSV fail at once (exit 2, one line): a line off and every
rewrite would land on the wrong image.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Iterable, Iterator, Optional, Sequence


def csv_keys(path: str, key_column: Optional[str], file_key: Optional[str], separator: str = ",") -> list[str]:
    """The sample key of every data row of the training CSV, in order."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=separator)
        header = next(reader, [])
        rows = list(reader)
    if key_column is None:
        return [f"{file_key}:{row}" for row in range(len(rows))]
    if key_column not in header:
        raise ValueError(f"--key_column {key_column!r} is not a column of {path} (columns: {', '.join(header)})")
    index = header.index(key_column)
    return [row[index] for row in rows]


def listings(keys: Sequence[str], rewrites: Sequence[Sequence[str]]) -> Iterator[str]:
    """One JSON line per key: its rewrites from each file, in the files' order (empty ones left out)."""
    for name_index, lines in enumerate(rewrites):
        if len(lines) != len(keys):
            raise ValueError(f"rewrite file {name_index + 1} has {len(lines)} lines, the CSV {len(keys)} rows")
    for i, key in enumerate(keys):
        texts = [lines[i] for lines in rewrites if lines[i].strip()]
        yield json.dumps({"key": key, "texts": texts}, ensure_ascii=False)


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines()


def main(argv: Optional[Iterable[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="the training CSV the rewrite files follow, row for row")
    parser.add_argument("--separator", default=",", help="the CSV's separator (open_clip's --csv-separator)")
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--key_column", help="the CSV column holding each row's sample key")
    keys.add_argument("--file_key", help="no key column: keys are FILE_KEY:<row>, as the curation makes them")
    parser.add_argument("--rewrites", nargs="+", required=True, help="LaCLIP's rewrite files, one rewrite a line")
    parser.add_argument("--out", required=True, help="the JSON-lines file to write (for --extra_texts)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        keys_ = csv_keys(args.csv, args.key_column, args.file_key, args.separator)
        lines = list(listings(keys_, [_lines(path) for path in args.rewrites]))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
    print(f"{len(lines):,} samples, {len(args.rewrites)} rewrites each at most: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
