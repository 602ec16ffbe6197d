"""MetaCLIP 2 worldwide mode: per-language metadata, one global id space.

Pure Python and numpy, no Beam import (docs/worldwide.md). `LanguageMetadata`
holds one list per language. The lists, concatenated in sorted language order,
form ONE global id space, so counts of every (language, entry) pair live in one
int64 array, as in MetaCLIP 1. Parsing (one JSON object or a directory of
`<language>.json` files), the canonical form digested, language codes.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from transforms.metadata.lists import (
    MetadataError,
    id_corrupting_problems,
    parse_metadata,
)

# A language code names a file (`<code>.json`) and appears in outputs: letters
# and digits in groups joined by "_" or "-" (en, zh, zh_yue, be-tarask, zh-Hant).
_LANGUAGE_CODE = re.compile(r"[A-Za-z0-9]+(?:[_-][A-Za-z0-9]+)*")

# Global ids are written as int32 (the matches column), like MetaCLIP 1's ids.
MAX_GLOBAL_ENTRIES = 2**31 - 1


def normalize_language_code(code: str) -> str:
    """Case- and separator-insensitive form of a code: "zh_Hant" -> "zh-hant"."""
    return code.strip().lower().replace("_", "-")


@dataclass(frozen=True)
class LanguageMetadata:
    """Per-language metadata lists and the global id space they form.

    Language `languages[i]`'s entry `j` has global id `offsets[i] + j`; the
    lists are concatenated in sorted language order, so `num_entries` ids in
    all. `sha256` is a digest of a canonical form (`canonical_json`), the same
    whether the lists came from one JSON object or a directory of files, so
    workers can check they loaded the same set.

    Each list is held as its compact JSON text, not as Python strings: 8.3M
    entries of 300 languages take ~0.2 GB that way instead of ~0.7 GB as str
    objects, in every worker process (docs/worldwide.md). `entries[language]`
    decodes one list (~0.05 s for 500k entries); keep the tuple it returns.
    """

    languages: tuple[str, ...]
    sizes: tuple[int, ...] = field(repr=False)
    offsets: tuple[int, ...] = field(repr=False)
    num_entries: int
    sha256: str
    _encoded: dict[str, bytes] = field(repr=False)

    def __hash__(self) -> int:
        return hash(self.sha256)

    @property
    def entries(self) -> "Mapping[str, tuple[str, ...]]":
        """Read-only mapping language -> its entries (decoded on each access)."""
        return _DecodedLists(self._encoded)

    @classmethod
    def from_lists(cls, lists: Mapping[str, Sequence[str]], source: str = "metadata") -> "LanguageMetadata":
        """Check per-language lists and number them; MetadataError (one line) if unusable."""
        return cls._from_encoded({code: _encode_checked_list(code, lists[code], source) for code in lists}, source)

    @classmethod
    def _from_encoded(cls, encoded: Mapping[str, tuple[bytes, int]], source: str) -> "LanguageMetadata":
        """From {code: (compact JSON of its checked list, its length)}."""
        if not encoded:
            raise MetadataError(f"metadata {source} holds no language: --mode metaclip2 needs at least one list")
        _check_language_codes(list(encoded), source)
        languages = tuple(sorted(encoded))
        sizes = tuple(encoded[code][1] for code in languages)
        offsets = tuple(int(x) for x in np.concatenate([[0], np.cumsum(sizes)[:-1]]))
        num_entries = int(sum(sizes))
        if num_entries > MAX_GLOBAL_ENTRIES:
            raise MetadataError(
                f"metadata {source} holds {num_entries:,} entries in all; at most {MAX_GLOBAL_ENTRIES:,} fit int32 ids"
            )
        digest = hashlib.sha256()
        for i, code in enumerate(languages):
            # The bytes of canonical_json(...), piece by piece.
            digest.update(b"{" if i == 0 else b",")
            digest.update(json.dumps(code).encode("ascii") + b":" + encoded[code][0])
        digest.update(b"}")
        return cls(
            languages, sizes, offsets, num_entries, digest.hexdigest(), {code: encoded[code][0] for code in languages}
        )

    def offset(self, language: str) -> int:
        """Global id of `language`'s first entry (KeyError if it has no list)."""
        return self.offsets[self._index(language)]

    def entry_range(self, language: str) -> range:
        """The global ids of `language`'s entries."""
        i = self._index(language)
        return range(self.offsets[i], self.offsets[i] + self.sizes[i])

    def language_of_global_id(self, global_id: int) -> str:
        """The language whose list holds global id `global_id`."""
        if not 0 <= global_id < self.num_entries:
            raise IndexError(f"global id {global_id} outside 0..{self.num_entries - 1}")
        return self.languages[bisect.bisect_right(self.offsets, global_id) - 1]

    def language_indexes(self, global_ids: np.ndarray) -> np.ndarray:
        """Index into `languages` of each global id (vectorised `language_of_global_id`)."""
        return (
            np.searchsorted(
                np.asarray(self.offsets, dtype=np.int64), np.asarray(global_ids, dtype=np.int64), side="right"
            )
            - 1
        )

    def local_ids(self, global_ids: np.ndarray, language: str) -> np.ndarray:
        """Ids within `language`'s own list; ValueError if any id belongs to another language."""
        ids = np.asarray(global_ids, dtype=np.int64)
        span = self.entry_range(language)
        if ids.size and (ids.min() < span.start or ids.max() >= span.stop):
            raise ValueError(f"global ids outside language {language!r} (ids {span.start}..{span.stop - 1})")
        return ids - span.start

    def global_entry(self, global_id: int) -> tuple[str, str]:
        """(language, entry) of a global id."""
        language = self.language_of_global_id(global_id)
        return language, json.loads(self._encoded[language])[global_id - self.offset(language)]

    def _index(self, language: str) -> int:
        i = bisect.bisect_left(self.languages, language)
        if i == len(self.languages) or self.languages[i] != language:
            raise KeyError(f"no metadata list for language {language!r}")
        return i


class _DecodedLists(Mapping):
    """`LanguageMetadata.entries`: decodes a language's list when asked for it."""

    def __init__(self, encoded: Mapping[str, bytes]):
        self._encoded = encoded

    def __getitem__(self, language: str) -> tuple[str, ...]:
        return tuple(json.loads(self._encoded[language]))

    def __contains__(self, language: object) -> bool:
        return language in self._encoded  # without decoding the list

    def __iter__(self):
        return iter(self._encoded)

    def __len__(self) -> int:
        return len(self._encoded)


def _encode_list(items: Sequence[str]) -> bytes:
    # ASCII-only JSON: exact for every str, lone surrogates included.
    return json.dumps(list(items), ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _encode_checked_list(code: object, items: object, source: str) -> tuple[bytes, int]:
    """A language's list checked like a MetaCLIP 1 list, as (compact JSON, length)."""
    if not isinstance(items, list | tuple):
        raise MetadataError(
            f"metadata {source}: language {code!r} must map to a JSON list of strings, not {type(items).__name__}"
        )
    if not items:
        raise MetadataError(f"metadata {source}: language {code!r} has an empty list: nothing could ever match")
    problems = id_corrupting_problems(items)
    if problems:
        raise MetadataError(f"metadata {source}: language {code!r} would corrupt entry ids: {'; '.join(problems)}")
    return _encode_list(items), len(items)


def _check_language_codes(codes: list, source: str) -> None:
    seen_normalized: dict[str, str] = {}
    for code in sorted(codes, key=str):
        if not isinstance(code, str) or not _LANGUAGE_CODE.fullmatch(code):
            raise MetadataError(
                f"metadata {source}: {code!r} is not a language code (letters and digits, "
                f"groups joined by '_' or '-', e.g. en, zh_yue)"
            )
        other = seen_normalized.setdefault(normalize_language_code(code), code)
        if other != code:
            raise MetadataError(
                f"metadata {source}: languages {other!r} and {code!r} differ only in case or '_'/'-': "
                "captions could not be routed to one of them"
            )


def canonical_json(entries: Mapping[str, Sequence[str]]) -> str:
    """The canonical text `LanguageMetadata.sha256` digests.

    One JSON object, languages sorted, entries in id order, no white space,
    every non-ASCII character escaped (so lone surrogates digest too).
    """
    return json.dumps(
        {code: list(entries[code]) for code in sorted(entries)},
        ensure_ascii=True,
        separators=(",", ":"),
        sort_keys=True,
    )


def _refuse_duplicate_keys(source: str):
    """A json object_pairs_hook: a key given twice would silently drop a list."""

    def hook(pairs):
        result = dict(pairs)
        if len(result) != len(pairs):
            seen: set[str] = set()
            repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise MetadataError(f"metadata file {source} names {repeated!r} twice in one JSON object")
        return result

    return hook


def parse_language_metadata_object(data: bytes, source: str) -> LanguageMetadata:
    """One file holding a JSON object {language: [entries]} (gzip detected by magic number)."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise MetadataError(f"metadata file {source} is not a readable gzip file: {error}") from None
    try:
        # Only the top level can name languages; a nested object is refused below anyway.
        value = json.loads(data, object_pairs_hook=_refuse_duplicate_keys(source))
    except (ValueError, UnicodeDecodeError) as error:
        if isinstance(error, MetadataError):
            raise
        raise MetadataError(f"metadata file {source} is not valid JSON: {error}") from None
    if isinstance(value, list):
        raise MetadataError(
            f"metadata file {source} holds a JSON list, the --mode metaclip1 format; --mode metaclip2 needs "
            "a JSON object {language: [entries]} or a directory of <language>.json lists"
        )
    if not isinstance(value, dict):
        raise MetadataError(
            f"metadata file {source} must hold a JSON object {{language: [entries]}}, not a JSON {type(value).__name__}"
        )
    return LanguageMetadata.from_lists(value, source)


_METADATA_SUFFIXES = (".json.gz", ".json")


def language_of_file_name(path: str) -> str:
    """`<language>.json` or `<language>.json.gz` -> language; MetadataError otherwise."""
    name = re.split(r"[/\\]", path.rstrip("/\\"))[-1]
    for suffix in _METADATA_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    raise MetadataError(f"metadata directory file {path} is not named <language>.json or <language>.json.gz")


def parse_language_metadata_files(files: Mapping[str, bytes]) -> LanguageMetadata:
    """A directory of per-language lists: {path: bytes}, each file MetaCLIP 1's list format.

    The language is the file name without `.json`/`.json.gz`. Each file is
    checked by `transforms.metadata.lists.parse_metadata`; the source named in
    errors is the directory.
    """
    if not files:
        raise MetadataError("metadata directory holds no <language>.json file")
    directory = _common_directory(list(files))
    encoded: dict[str, tuple[bytes, int]] = {}
    paths: dict[str, str] = {}
    for path in sorted(files):
        language = language_of_file_name(path)
        if language in paths:
            raise MetadataError(
                f"metadata directory {directory} has two lists for language {language!r}: {paths[language]} and {path}"
            )
        paths[language] = path
        # One list at a time is decoded to str objects; only its compact form is kept.
        entries = parse_metadata(files[path], path).entries
        encoded[language] = (_encode_list(entries), len(entries))
    return LanguageMetadata._from_encoded(encoded, directory)


def _common_directory(paths: list[str]) -> str:
    """The folder the files are in, for error messages."""
    parents = {re.sub(r"[/\\][^/\\]*$", "", p.rstrip("/\\")) if re.search(r"[/\\]", p) else "." for p in paths}
    return parents.pop() if len(parents) == 1 else "(several directories)"


def require_language(metadata: LanguageMetadata, language: str = "en") -> None:
    """MetadataError unless the metadata has a list for `language` (the reference)."""
    if language not in metadata.entries:
        shown = ", ".join(metadata.languages[:8]) + (", ..." if len(metadata.languages) > 8 else "")
        raise MetadataError(
            f"--mode metaclip2 needs a metadata list for the reference language {language!r} "
            f"(its tail share at --threshold sets every other language's t); the metadata has: {shown}"
        )
