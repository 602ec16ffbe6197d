"""How input files are laid out: the formats and presets, `InputLayout`, and the caption check.

No Beam import. `InputLayout` is fixed once, before the run (transforms.formats.readers
probes it from the first input file); every reader turns its file into batches of it.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Optional, Sequence

import pyarrow as pa

from transforms.core.columns import KEY, SOURCE_FILE, SOURCE_ROW, TEXT
from transforms.formats.rejections import (
    EMPTY_TEXT,
    NON_STRING_TEXT,
    NULL_TEXT,
    TEXT_TOO_LONG,
)
from transforms.formats.tar import TXT_MEMBER, WEBDATASET, expand_braces

FORMATS = ("jsonl", "parquet", "tsv", "csv", WEBDATASET)
# The suffixes Beam's CompressionTypes.AUTO decompresses.
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".lzma", ".xz")
_FORMAT_BY_SUFFIX = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".tsv": "tsv",
    ".csv": "csv",
    ".tar": WEBDATASET,
}
# Input presets: the column names of well-known pools, so users need not spell them.
PRESETS = ("datacomp", "img2dataset")


class InputError(ValueError):
    """A problem with the inputs that must stop the run before any work."""


def infer_format(path: str) -> Optional[str]:
    """Format from the file name ("a.jsonl.gz" -> "jsonl"); None when unknown."""
    name = posixpath.basename(path).lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix, fmt in _FORMAT_BY_SUFFIX.items():
        if name.endswith(suffix):
            return fmt
    return None


@dataclass(frozen=True)
class InputLayout:
    """How to turn any input file into batches: fixed once, before the run.

    `passthrough` lists the (name, Arrow type) of the columns carried to the
    subset besides key and text, identical for every batch of the run.
    """

    format: str
    # Webdataset: a name starting with "." is a member extension (".txt"), any other a
    # field of the sample's .json member.
    text_field: str = TEXT
    key_field: Optional[str] = None  # None: "key" if present, else file:row (webdataset: __key__)
    url_field: Optional[str] = None
    column_names: Optional[tuple[str, ...]] = None  # header-less TSV/CSV
    passthrough: tuple[tuple[str, pa.DataType], ...] = ()
    max_text_bytes: int = 65536
    batch_size: int = 4096
    # The folder every input is in (key_root): a record without a key gets the key
    # `<its file's path below this folder>:<row>`, unique across the inputs.
    key_root: Optional[str] = None  # None: not known, the file name
    # Webdataset: fields of the .json member read as list<string> columns (--extra_text_fields).
    extra_fields: tuple[str, ...] = ()

    @property
    def key_column(self) -> str:
        return self.key_field or KEY

    def batch_schema(self) -> pa.Schema:
        return pa.schema(
            [(KEY, pa.string()), (TEXT, pa.string()), (SOURCE_FILE, pa.int32()), (SOURCE_ROW, pa.int64())]
            + [pa.field(name, dtype) for name, dtype in self.passthrough]
        )


def text_problem(value: object, max_text_bytes: int) -> Optional[str]:
    """The rejection reason for a caption value, or None when it is usable."""
    if value is None:
        return NULL_TEXT
    if not isinstance(value, str):
        return NON_STRING_TEXT
    if not value or value.isspace():  # isspace() is exactly what str.strip() strips
        return EMPTY_TEXT
    # Cheap character test first: a str of n characters has at most 4n UTF-8 bytes.
    if len(value) * 4 > max_text_bytes and len(value.encode("utf-8", "surrogatepass")) > max_text_bytes:
        return TEXT_TOO_LONG
    return None


def key_root(paths: Sequence[str]) -> str:
    """The deepest folder (ending in "/") that holds every path; "" when they share none.

    Keys made from the paths below it are unique across the inputs, and for inputs that
    all sit in one folder they are just the file names.
    """
    folders = [path[: path.rfind("/") + 1] for path in paths]
    common = posixpath.commonprefix(folders) if folders else ""
    return common[: common.rfind("/") + 1]


def listable_names(pattern: str) -> list[str]:
    """The names an --input pattern spells (brace expansion), each as Beam's match can list it.

    Beam lists the folder before a pattern's first wildcard, and a local relative glob
    without one (`*.parquet`, `*/part-0.parquet`) would match nothing: it gets `./`.
    """
    names = expand_braces(pattern)
    return ["./" + name if _glob_in_first_folder(name) else name for name in names]


def _glob_in_first_folder(name: str) -> bool:
    if "://" in name or name.startswith(("/", "./", "../")):
        return False
    wildcards = [i for i in (name.find(c) for c in "*?[") if i != -1]
    return bool(wildcards) and "/" not in name[: min(wildcards)]


def fallback_key(path: str, row: int, root: Optional[str] = None) -> str:
    """The key of a record without one: `<path below root>:<row number>` (the file name when root is
    the file's own folder, None, or not above the path; the whole path when root is "", as for
    relative paths in different folders, `a/part-0.parquet` and `b/part-0.parquet`)."""
    name = path[len(root) :] if root is not None and path.startswith(root) else posixpath.basename(path)
    return f"{name}:{row}"


def preset_fields(preset: str, fmt: str, columns: Optional[Sequence[str]], given: Optional[dict] = None) -> dict:
    """The text, key and url fields of an input preset, for this format and these columns.

    datacomp: DataComp's pool metadata (`uid`, `url`, `text`), or its webdataset shards
    (caption in `.txt`, `uid` and `url` in `.json`). img2dataset: its input parquet
    (`url`/`caption`, or LAION's `URL`/`TEXT`), or its webdataset output (`.txt`, `url` in
    `.json`). `given`: the fields named explicitly (--text_field ...; None: not given): they
    win over the preset's, whose columns then need not be there. Raises InputError when a
    column the preset still names is not there.
    """
    if preset not in PRESETS:
        raise InputError(f"unknown --input_preset {preset!r}; expected one of {', '.join(PRESETS)}")
    given = {name: value for name, value in (given or {}).items() if value is not None}
    if fmt == WEBDATASET:
        fields = {"text_field": TXT_MEMBER, "key_field": "uid" if preset == "datacomp" else None, "url_field": "url"}
        return {**fields, **given}
    names = list(columns or [])
    if preset == "datacomp":
        fields = {"key_field": "uid", "url_field": "url", "text_field": "text"}  # in the message's order
        missing = [column for field, column in fields.items() if field not in given and column not in names]
        if missing:
            raise InputError(
                f"--input_preset datacomp needs the columns {_needed(fields, given)}; {', '.join(missing)} missing "
                f"(columns: {', '.join(map(str, names))})"
            )
        return {**fields, **given}
    for url, caption in (("url", "caption"), ("URL", "TEXT")):
        fields = {"text_field": caption, "key_field": None, "url_field": url}
        if all(field in given or column is None or column in names for field, column in fields.items()):
            return {**fields, **given}
    raise InputError(
        "--input_preset img2dataset needs the columns url and caption (or URL and TEXT); "
        f"columns: {', '.join(map(str, names))}"
    )


def _needed(fields: dict, given: dict) -> str:
    """The preset's columns not replaced by an explicit flag, as 'a, b and c'."""
    needed = [column for field, column in fields.items() if field not in given]
    return needed[0] if len(needed) == 1 else ", ".join(needed[:-1]) + " and " + needed[-1]
