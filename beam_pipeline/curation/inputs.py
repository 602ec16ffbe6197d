"""The run's input files: listing them, telling their format and columns, estimating their size.

Read-only: every function here only lists and reads inputs (a few first rows and footers).
"""

from __future__ import annotations

from typing import Optional, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipeline.options import CurationArgs, UsageError
from transforms.beam.io import open_input
from transforms.core.columns import TEXT
from transforms.formats.input_size import data_bytes
from transforms.formats.layout import (
    InputError,
    InputLayout,
    infer_format,
    listable_names,
    preset_fields,
)
from transforms.formats.readers import probe_columns, probe_layout
from transforms.formats.tar import TXT_MEMBER, WEBDATASET

# Webdataset shards are mostly image bytes: count ~1/64 of them as caption data.
WEBDATASET_BYTES_PER_CAPTION_BYTE = 64


def resolve_inputs(globs: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """Sorted unique paths matched by the globs, and each one's size.

    Brace patterns (`shards/{000000..000099}.tar`, webdataset's shard lists) are expanded
    first; every name they spell must exist: a shard list with holes is refused.
    """
    sizes: dict[str, int] = {}
    for pattern in globs:
        names = listable_names(pattern)
        missing = []
        for name in names:
            try:
                found = FileSystems.match([name])[0].metadata_list
            except Exception as error:  # noqa: BLE001 - e.g. gs:// without credentials
                raise UsageError(f"--input {pattern!r} cannot be listed: {error}") from None
            if not found:
                missing.append(name)
            for metadata in found:
                sizes[metadata.path] = metadata.size_in_bytes
        if missing and len(names) == 1:
            raise UsageError(f"--input {pattern!r} matches no file")
        if missing:
            raise UsageError(
                f"--input {pattern!r}: {len(missing)} of its {len(names)} names match no file (first: {missing[0]})"
            )
    return sorted(sizes), sizes


def input_format(paths: Sequence[str], given: Optional[str]) -> str:
    """--input_format, or the one format every input's name says."""
    if given:
        return given
    formats = {}
    for path in paths:
        fmt = infer_format(path)
        if fmt is None:
            raise UsageError(f"cannot tell the format of {path} from its name; pass --input_format")
        formats.setdefault(fmt, path)
    if len(formats) > 1:
        listed = ", ".join(f"{f}: {p}" for f, p in formats.items())
        raise UsageError(f"inputs mix formats ({listed}); curate them separately or pass --input_format")
    return next(iter(formats))


def probe(paths: Sequence[str], fmt: str, layout_options: dict) -> InputLayout:
    """The layout from the first input file that has readable columns."""
    problems = []
    for path in paths:
        try:
            with open_input(path, fmt) as handle:
                layout = probe_layout(handle, fmt, **layout_options)
        except InputError as error:
            raise UsageError(f"{error} (in {path})") from None
        except Exception as error:  # noqa: BLE001 - a corrupt file: try the next one
            problems.append(f"{path}: {type(error).__name__}: {error}")
            continue
        if layout is not None:
            return layout
        problems.append(f"{path}: no records")
    raise UsageError(f"no input file could be read ({problems[0]}{' ...' if len(problems) > 1 else ''})")


def _first_columns(paths: Sequence[str], fmt: str, column_names) -> list:
    """The columns of the first input file that has some (for --input_preset)."""
    for path in paths:
        try:
            with open_input(path, fmt) as handle:
                columns = probe_columns(handle, fmt, column_names)
        except Exception:  # noqa: BLE001 - a corrupt file: try the next one
            continue
        if columns:
            return columns
    return []


def fields(paths: Sequence[str], fmt: str, args: CurationArgs) -> dict:
    """text/key/url fields: the format's defaults, then the preset's, then explicit flags.

    Explicit flags win over the preset's (README): the preset's columns are checked only for
    the fields no flag names.
    """
    chosen = {"text_field": TXT_MEMBER if fmt == WEBDATASET else TEXT, "key_field": None, "url_field": None}
    if args.input_preset:
        columns = [] if fmt == WEBDATASET else _first_columns(paths, fmt, args.column_names)
        given = {name: getattr(args, name) for name in chosen}
        try:
            chosen.update(preset_fields(args.input_preset, fmt, columns, given))
        except InputError as error:
            raise UsageError(str(error)) from None
    for name in chosen:
        given = getattr(args, name)
        if given is not None:
            chosen[name] = given
    return chosen


def caption_bytes(paths: Sequence[str], sizes: dict, layout: InputLayout) -> int:
    """The input's bytes of caption data, as a shard writer holds them (transforms.formats.input_size)."""
    if layout.format == WEBDATASET:
        return sum(sizes[path] for path in paths) // WEBDATASET_BYTES_PER_CAPTION_BYTE
    columns = [layout.text_field, layout.key_column] + [
        layout.url_field if name == "url" and layout.url_field else name for name, _ in layout.passthrough
    ]
    compression = CompressionTypes.UNCOMPRESSED
    return data_bytes(
        paths, sizes, layout.format, columns, lambda path: FileSystems.open(path, compression_type=compression)
    )
