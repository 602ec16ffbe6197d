"""Files of the metadata commands: listing, reading and writing through Beam's filesystems (imported lazily)."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from typing import Iterator, Sequence

from transforms.metadata.sources import (
    SourceError,
)


class UsageError(ValueError):
    """A bad option or input: one line, exit status 2, no traceback.

    The same as beam_pipeline.options.UsageError, which is not imported here:
    that module imports Beam, a second `validate` has no use for.
    """


def match_paths(pattern: str, flag: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception as error:  # noqa: BLE001 - e.g. gs:// without credentials
        raise UsageError(f"{flag} {pattern!r} cannot be listed: {error}") from None
    if not found:
        raise UsageError(f"{flag} {pattern!r} matches no file")
    return sorted(m.path for m in found)


def read_lines(path: str) -> Iterator[str]:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as handle:
            for number, raw in enumerate(iter(handle.readline, b""), 1):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise SourceError(f"{path}:{number}: not UTF-8 text") from None
    except (OSError, EOFError, zlib.error) as error:  # e.g. a truncated .gz
        raise SourceError(f"{path} cannot be read: {error}") from None


def write_file(path: str, data: bytes) -> bytes:
    """Write through a temporary name, so a failed build leaves no partial file.

    Gzip-compressed when `path` ends with .gz. Returns the bytes written.
    """
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if path.endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # mtime=0: the same list gives the same bytes
    temporary = f"{path}.tmp-{os.getpid()}"
    with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)
    FileSystems.rename([temporary], [path])
    return data


def read_bytes(path: str) -> bytes:
    if "://" in path:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return handle.read()
    with open(path, "rb") as handle:
        return handle.read()


def sources_path(output: str) -> str:
    """The sidecar's default name: metadata.json -> metadata.sources.json."""
    stem = output[: -len(".gz")] if output.endswith(".gz") else output
    stem = stem[: -len(".json")] if stem.endswith(".json") else stem
    return stem + ".sources.json"


def metadata_bytes(entries: Sequence[str]) -> bytes:
    """A JSON list, one entry a line: valid JSON, and diffs show changed entries."""
    return ("[\n" + ",\n".join(json.dumps(entry, ensure_ascii=False) for entry in entries) + "\n]\n").encode("utf-8")
