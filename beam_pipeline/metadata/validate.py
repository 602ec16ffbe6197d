"""`validate`: the problems of a metadata list, and whether the curation would refuse it."""

from __future__ import annotations

import gzip
import hashlib
import json

from beam_pipeline.metadata.files import UsageError, read_bytes
from transforms.metadata.checks import check_entries
from transforms.metadata.lists import MetadataError, parse_metadata


def _decoded_items(data: bytes):
    """The JSON value of a metadata file's bytes, or None if it does not decode."""
    try:
        return json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    except (OSError, EOFError, ValueError, UnicodeDecodeError):
        return None


def validate_command(args, _beam_args) -> int:
    name = args.metadata
    try:
        data = read_bytes(name)
    except OSError as error:
        raise UsageError(f"cannot read {name}: {error.strerror or error}") from None
    try:
        parse_metadata(data, name)
        refusal = None
    except MetadataError as error:
        refusal = str(error)  # the curation's own words
    items = _decoded_items(data)
    findings = check_entries(items, args.examples) if isinstance(items, list) else []

    size = f"{len(items):,} entries" if isinstance(items, list) else "not a JSON list"
    print(f"{name}: {size}, sha256 {hashlib.sha256(data).hexdigest()}")
    for finding in findings:
        print(f"{finding.severity}: {finding.message}")
        for example in finding.examples:
            print(f"  {example}")
    warnings = sum(1 for finding in findings if finding.severity == "warning")
    if refusal:
        print(f"INVALID: {refusal}")
        return 1
    print(f"OK with warnings ({warnings} kinds): usable, ids unaffected" if warnings else "OK: no problem found")
    return 0
