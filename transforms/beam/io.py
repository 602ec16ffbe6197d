"""Files through Beam's filesystems (local, gs://, s3://): reading inputs, atomic writes, globs.

Not PTransforms, but every function here goes through `apache_beam.io.filesystems`,
which imports the whole Beam SDK: that is why they live under transforms/beam/.
"""

from __future__ import annotations

import os
import uuid
from typing import Callable, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.core.documents import json_document
from transforms.metadata.lists import MetadataError, parse_metadata
from transforms.worldwide.metadata import (
    LanguageMetadata,
    parse_language_metadata_files,
    parse_language_metadata_object,
)

__all__ = [
    "copy_file",
    "delete_quietly",
    "glob_paths",
    "local_copy",
    "load_language_metadata",
    "load_metadata",
    "open_input",
    "read_bytes",
    "remove_empty_local_dir",
    "write_atomically",
    "write_json_atomically",
]


def glob_paths(pattern: str) -> list[str]:
    """The paths a glob matches now (none is fine)."""
    return [m.path for m in FileSystems.match([pattern])[0].metadata_list]


def open_input(path: str, fmt: str):
    """An input file, opened as the probing code reads it: Parquet raw (random access), the rest decompressed."""
    compression = CompressionTypes.UNCOMPRESSED if fmt == "parquet" else CompressionTypes.AUTO
    return FileSystems.open(path, compression_type=compression)


def write_atomically(path: str, write: Callable[[object], None]) -> str:
    """Write through `write(handle)` to a hidden temporary file, then rename to `path`."""
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    temporary = FileSystems.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
    with FileSystems.create(temporary, mime_type="application/octet-stream", compression_type="uncompressed") as handle:
        write(handle)
    FileSystems.rename([temporary], [path])
    return path


def write_json_atomically(path: str, value: object) -> str:
    data = json_document(value)
    return write_atomically(path, lambda handle: handle.write(data))


def load_metadata(path: str, checked_sha256: str = ""):
    """Read and check a metadata list from any Beam filesystem path (see parse_metadata for `checked_sha256`)."""
    try:
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            data = handle.read()
    except Exception as error:  # noqa: BLE001 - surfaced as one clear line
        raise MetadataError(f"cannot read metadata file {path}: {error}") from None
    return parse_metadata(data, path, checked_sha256)


def load_language_metadata(path: str) -> LanguageMetadata:
    """A directory of <lang>.json lists, or one JSON object file, from any Beam filesystem."""
    try:
        found = [
            m.path
            for pattern in ("*.json", "*.json.gz")
            for m in FileSystems.match([FileSystems.join(path.rstrip("/"), pattern)])[0].metadata_list
        ]
    except Exception:  # noqa: BLE001 - not a directory (or nothing there): read it as a file
        found = []
    if not found:
        return parse_language_metadata_object(read_bytes(path), path)
    return parse_language_metadata_files({name: read_bytes(name) for name in sorted(found)})


def read_bytes(path: str) -> bytes:
    try:
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            return handle.read()
    except Exception as error:  # noqa: BLE001 - surfaced as one clear line
        raise MetadataError(f"cannot read metadata file {path}: {error}") from None


_COPY_CHUNK = 16 << 20


def copy_file(source: str, handle) -> int:
    copied = 0
    with FileSystems.open(source, compression_type=CompressionTypes.UNCOMPRESSED) as fragment:
        while True:
            chunk = fragment.read(_COPY_CHUNK)
            if not chunk:
                return copied
            handle.write(chunk)
            copied += len(chunk)


_local_copies: dict[str, str] = {}


def local_copy(path: str) -> str:
    """`path` itself when it is on this machine; else a copy in a temporary folder, made once per
    process (libraries such as fastText open only local files; workers read gs:// through this)."""
    if "://" not in path:
        return path
    copied = _local_copies.get(path)
    if copied is None:
        import tempfile

        directory = tempfile.mkdtemp(prefix="balancebeam-asset-")
        copied = os.path.join(directory, path.rstrip("/").rsplit("/", 1)[-1])
        with open(copied, "wb") as handle:
            copy_file(path, handle)
        _local_copies[path] = copied
    return copied


def delete_quietly(paths: Sequence[str]) -> None:
    """Delete the files that still exist (a retried step may find some gone already)."""
    existing = [path for path in paths if path and FileSystems.exists(path)]
    if existing:
        FileSystems.delete(existing)


def remove_empty_local_dir(directory: str) -> None:
    if "://" not in directory and os.path.isdir(directory) and not os.listdir(directory):
        os.rmdir(directory)
