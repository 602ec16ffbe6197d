"""MetaCLIP 2 "worldwide" mode: per-language metadata, CJK-aware padding, a t per language.

Pure Python and numpy, no Beam import (curation-spec.md, sections 4 and 6;
docs/worldwide.md). The pipeline, the tests and any training-time loader call
these same functions.

- Padding (`pad_entry_worldwide`): an entry gets a space on a side only when the
  character at that end is not a CJK ideograph, Thai, Lao, Burmese, Khmer or
  Tibetan character, nor punctuation. Captions are spaced exactly as in
  MetaCLIP 1 (`transforms.core.spacing.space_text`).
- Metadata (`LanguageMetadata`): one list per language. The lists, concatenated
  in sorted language order, form ONE global id space, so counts of every
  (language, entry) pair live in one int64 array, as in MetaCLIP 1.
- Matching (`WorldwideMatcher`): a caption is matched only against its own
  language's list, with one Aho-Corasick automaton per language, built lazily
  the first time a caption of that language shows up.
- Thresholds (`language_thresholds`): English keeps `t_en`; every other language
  gets the t among its own counts whose tail share is closest to English's.

Where the published MetaCLIP 2 reference code is ambiguous or does not run, the
choice made here is written next to the code that makes it.
"""

from __future__ import annotations

import bisect
import functools
import gzip
import hashlib
import json
import re
import string
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import ahocorasick
import numpy as np

from transforms.core.spacing import SPACED_WHITESPACE, WRAPPED_PUNCTUATION, space_text
from transforms.metadata.lists import (
    MetadataError,
    id_corrupting_problems,
    parse_metadata,
)

# ---------------------------------------------------------------------------
# Padding (curation-spec.md, section 4)
# ---------------------------------------------------------------------------

# Code-point ranges (inclusive) of the scripts written without spaces between
# words. These are the ranges the MetaCLIP 2 reference tests, kept as they are
# so that our matches are the reference's: the CJK Unified Ideographs with
# extensions A to F, the compatibility ideographs, the radicals and the
# ideographic description characters; then the Thai, Lao, Myanmar (Burmese),
# Khmer and Tibetan blocks. Kana (U+3040-30FF) and Hangul are NOT in the list:
# Japanese kana and Korean entries are padded like Latin ones. Blocks outside
# these ranges (CJK extensions G and later, the compatibility ideographs
# supplement U+2F800-2FA1F, Myanmar Extended-A/B, Khmer Symbols) are padded too.
NO_PAD_RANGES: tuple[tuple[int, int], ...] = (
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0x3400, 0x4DBF),  # CJK extension A
    (0x20000, 0x2A6DF),  # CJK extension B
    (0x2A700, 0x2B73F),  # CJK extension C
    (0x2B740, 0x2B81F),  # CJK extension D
    (0x2B820, 0x2CEAF),  # CJK extension E
    (0x2CEB0, 0x2EBEF),  # CJK extension F
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x2E80, 0x2EFF),  # CJK Radicals Supplement
    (0x2F00, 0x2FDF),  # Kangxi Radicals
    (0x2FF0, 0x2FFF),  # Ideographic Description Characters
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar (Burmese)
    (0x1780, 0x17FF),  # Khmer
    (0x0F00, 0x0FFF),  # Tibetan
)

# The full-width marks the spec lists; with ASCII punctuation (string.punctuation)
# they are the "punctuation" that is never padded.
FULL_WIDTH_MARKS = "，。、；：？！“”‘’（）【】《》〈〉「」『』～—"
NO_PAD_PUNCTUATION = frozenset(string.punctuation + FULL_WIDTH_MARKS)


def is_no_pad_char(char: str) -> bool:
    """True for a character that gets no space beside it at an entry's end."""
    if char in NO_PAD_PUNCTUATION:
        return True
    code_point = ord(char)
    return any(start <= code_point <= end for start, end in NO_PAD_RANGES)


def pad_entry_worldwide(entry: str) -> str:
    """The form of an entry that must occur in a spaced caption (worldwide mode).

    A space is added before the entry unless its first character is a no-pad
    character, and after it unless its last one is:

    >>> pad_entry_worldwide("dog"), pad_entry_worldwide("東京"), pad_entry_worldwide("C++")
    (' dog ', '東京', ' C++')
    >>> pad_entry_worldwide("タワー"), pad_entry_worldwide("東京タワー")
    (' タワー ', '東京タワー ')

    The empty entry has no end character, so nothing stops its padding: it
    becomes "  ", as in MetaCLIP 1 (the reference indexes entry[0] and crashes
    on it; `beam_pipeline.metadata validate` reports empty entries anyway).
    """
    if not entry:
        return "  "
    head = "" if is_no_pad_char(entry[0]) else " "
    tail = "" if is_no_pad_char(entry[-1]) else " "
    return head + entry + tail


def _padded_form_can_occur(padded: str) -> bool:
    """Whether some spaced caption contains `padded` (exact, not a heuristic).

    A spaced caption never holds a tab, newline or carriage return; each of
    the seven wrapped marks has a space right before and after it; and two
    wrapped marks are at least two characters apart (`" " + text between + " "`).
    Any string meeting these three rules is found in the spaced form of itself
    with the spaces next to its wrapped marks removed.
    """
    if any(c in padded for c in SPACED_WHITESPACE):
        return False
    previous_mark = None
    for i, c in enumerate(padded):
        if c not in WRAPPED_PUNCTUATION:
            continue
        if (i > 0 and padded[i - 1] != " ") or (i + 1 < len(padded) and padded[i + 1] != " "):
            return False
        if previous_mark is not None and i - previous_mark < 3:
            return False
        previous_mark = i
    return True


def can_ever_match_worldwide(entry: str) -> bool:
    """False for entries that no spaced caption can contain in worldwide mode.

    Unlike MetaCLIP 1, an unpadded end may be a wrapped mark: `"a ."` ends in
    "." and becomes " a ." (matches "a."), while "3.5" and "U.S." still never
    match, and neither does anything holding a tab or newline.
    """
    return _padded_form_can_occur(pad_entry_worldwide(entry))


def match_entries_brute_force_worldwide(text: str, entries: Sequence[str]) -> list[int]:
    """The spec, literally: ids of the entries whose worldwide padded form is a substring.

    For tests and benchmarks only (one substring search per entry).
    """
    spaced = space_text(text)
    return [entry_id for entry_id, entry in enumerate(entries) if pad_entry_worldwide(entry) in spaced]


# ---------------------------------------------------------------------------
# Per-language metadata: one global id space
# ---------------------------------------------------------------------------

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
            raise MetadataError(f"metadata {source} holds {num_entries:,} entries in all; at most {MAX_GLOBAL_ENTRIES:,} fit int32 ids")
        digest = hashlib.sha256()
        for i, code in enumerate(languages):
            # The bytes of canonical_json(...), piece by piece.
            digest.update(b"{" if i == 0 else b",")
            digest.update(json.dumps(code).encode("ascii") + b":" + encoded[code][0])
        digest.update(b"}")
        return cls(languages, sizes, offsets, num_entries, digest.hexdigest(), {code: encoded[code][0] for code in languages})

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
        return np.searchsorted(np.asarray(self.offsets, dtype=np.int64), np.asarray(global_ids, dtype=np.int64), side="right") - 1

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
        raise MetadataError(f"metadata {source}: language {code!r} must map to a JSON list of strings, not {type(items).__name__}")
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
                f"groups joined by '_' or '-', e.g. en, zh_yue)")
        other = seen_normalized.setdefault(normalize_language_code(code), code)
        if other != code:
            raise MetadataError(
                f"metadata {source}: languages {other!r} and {code!r} differ only in case or '_'/'-': "
                "captions could not be routed to one of them")


def canonical_json(entries: Mapping[str, Sequence[str]]) -> str:
    """The canonical text `LanguageMetadata.sha256` digests.

    One JSON object, languages sorted, entries in id order, no white space,
    every non-ASCII character escaped (so lone surrogates digest too).
    """
    return json.dumps({code: list(entries[code]) for code in sorted(entries)},
                      ensure_ascii=True, separators=(",", ":"), sort_keys=True)


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
            "a JSON object {language: [entries]} or a directory of <language>.json lists")
    if not isinstance(value, dict):
        raise MetadataError(f"metadata file {source} must hold a JSON object {{language: [entries]}}, not a JSON {type(value).__name__}")
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
            raise MetadataError(f"metadata directory {directory} has two lists for language {language!r}: {paths[language]} and {path}")
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
            f"(its tail share at --threshold sets every other language's t); the metadata has: {shown}")


# ---------------------------------------------------------------------------
# Language codes -> metadata languages
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageMap:
    """Language codes (from a field or a language-id model) -> metadata languages.

    `mapping` is keyed by normalised code (`normalize_language_code`), so
    "zh-CN", "zh_cn" and "ZH-CN" are one key. See `resolve` for the order in
    which a code is looked up.
    """

    mapping: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | bytes | None, source: str = "--language_map") -> "LanguageMap":
        """A JSON object text (`{"zh-cn": "zh"}`) or pairs (`zh-cn=zh,zh-tw=zh`); None/empty: no mapping.

        The pipeline passes a file's contents when the option names a file,
        the option text otherwise. Raises ValueError with one line.
        """
        if isinstance(text, bytes):
            text = text.decode("utf-8-sig")
        text = (text or "").strip()
        if not text:
            return cls({})
        if text.startswith("{"):
            pairs = _json_object_pairs(text, source)
        else:
            pairs = _option_pairs(text, source)
        mapping: dict[str, str] = {}
        for code, language in pairs:
            if not isinstance(language, str) or not language.strip():
                raise ValueError(f"{source}: code {code!r} must map to a language code (a non-empty string), not {language!r}")
            if not code.strip():
                raise ValueError(f"{source}: an empty code maps to {language!r}")
            key = normalize_language_code(code)
            if mapping.get(key, language.strip()) != language.strip():
                raise ValueError(f"{source}: code {code!r} is mapped twice, to {mapping[key]!r} and {language.strip()!r}")
            mapping[key] = language.strip()
        return cls(mapping)

    def resolver(self, available_languages: Collection[str], default: str) -> Callable[[str | None], str]:
        """A fast `code -> language` function for one metadata set (memoised).

        Order: (1) a missing, None or blank code -> `default`; (2) a mapped code
        -> its target, if the metadata has that language (matched exactly, else
        case/separator-insensitively), else `default`; (3) the code itself if
        the metadata lists it; (4) the code case/separator-insensitively
        ("ZH" -> "zh", "zh_yue" <-> "zh-yue"); (5) its primary subtag, the part
        before the first "-"/"_" ("zh-Hans", "zh_CN" -> "zh"; "pt-BR" -> "pt");
        (6) `default`, even if the metadata has no list for it (such captions
        then match nothing).
        """
        available = frozenset(available_languages)
        by_normalized: dict[str, str] = {}
        for language in sorted(available):
            by_normalized.setdefault(normalize_language_code(language), language)
        mapping = self.mapping

        def listed(code: str) -> str | None:
            if code in available:
                return code
            return by_normalized.get(normalize_language_code(code))

        @functools.lru_cache(maxsize=4096)  # codes are few; the bound guards against junk fields
        def resolve(code: str) -> str:
            normalized = normalize_language_code(code)
            if normalized in mapping:
                return listed(mapping[normalized]) or default
            found = listed(code)
            if found is None:
                found = by_normalized.get(normalized.split("-")[0])
            return found or default

        def resolve_code(code: str | None) -> str:
            if not isinstance(code, str) or not code.strip():
                return default
            return resolve(code)

        return resolve_code

    def resolve(self, code: str | None, available_languages: Collection[str], default: str) -> str:
        """The metadata language for one code; see `resolver` (use that for many codes)."""
        return self.resolver(available_languages, default)(code)


def _json_object_pairs(text: str, source: str) -> list[tuple[str, object]]:
    try:
        pairs = json.loads(text, object_pairs_hook=lambda items: items)
    except ValueError as error:
        raise ValueError(f"{source} is not a valid JSON object: {error}") from None
    if not isinstance(pairs, list):
        raise ValueError(f"{source} must be a JSON object of code -> language")
    return pairs


def _option_pairs(text: str, source: str) -> list[tuple[str, str]]:
    pairs = []
    for item in text.split(","):
        if not item.strip():
            continue  # a trailing comma
        code, sep, language = item.partition("=")
        if not sep or "=" in language:
            raise ValueError(f"{source}: {item.strip()!r} is not CODE=LANGUAGE (expected e.g. zh-cn=zh,zh-tw=zh or a JSON file)")
        pairs.append((code.strip(), language.strip()))
    return pairs


# ---------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------


def build_worldwide_automaton(entries: Sequence[str], first_id: int) -> ahocorasick.Automaton:
    """Automaton over worldwide-padded entries, valued by global id (`first_id` + index).

    Integer values (STORE_INTS), as in MetaCLIP 1: less memory, faster iteration.
    Worldwide padding is injective (a space is only ever added, and a space is
    never a no-pad character), so no two entries share a key.
    """
    automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
    for local_id, entry in enumerate(entries):
        automaton.add_word(pad_entry_worldwide(entry), first_id + local_id)
    automaton.make_automaton()
    return automaton


class WorldwideMatcher:
    """Matches captions against their own language's list; one automaton per language.

    Automata are built on first use and kept, so a worker process holds only
    the languages its captions are in. Safe to share between threads (the
    holder `apache_beam.utils.shared.Shared` keeps per process): building is
    done under a lock, matching only reads.
    """

    def __init__(self, metadata: LanguageMetadata):
        self.metadata = metadata
        self._automata: dict[str, ahocorasick.Automaton | None] = {}
        self._lock = threading.Lock()

    @property
    def built_languages(self) -> tuple[str, ...]:
        """Languages whose automaton this matcher has built, sorted."""
        return tuple(sorted(lang for lang, automaton in self._automata.items() if automaton is not None))

    def automaton(self, language: str) -> ahocorasick.Automaton | None:
        """`language`'s automaton, built now if needed; None for a language without a list."""
        try:
            return self._automata[language]
        except KeyError:
            pass
        with self._lock:
            if language not in self._automata:
                if language in self.metadata.entries:
                    entries = self.metadata.entries[language]
                    self._automata[language] = build_worldwide_automaton(entries, self.metadata.offset(language))
                else:
                    self._automata[language] = None
            return self._automata[language]

    def match(self, text: str, language: str) -> list[int]:
        """Ascending global ids of `language`'s entries found in the spaced text."""
        automaton = self.automaton(language)
        if automaton is None:
            return []
        return sorted({global_id for _, global_id in automaton.iter(space_text(text))})

    def match_batch(self, texts: Sequence[str], languages: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Match many captions, each against its (already resolved) language's list.

        Returns (offsets int64 [n + 1], flat global ids int32) in Arrow list
        layout, like `EntryMatcher.match_batch`: caption i's ids are
        `flat[offsets[i]:offsets[i + 1]]`, ascending. Rows are grouped by
        language so each automaton is walked over all of its rows in one tight
        loop (one automaton's tables stay in cache); a batch of one language,
        the common case with a language field, skips the regrouping.
        """
        if len(texts) != len(languages):
            raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
        rows_by_language: dict[str, list[int]] = {}
        for row, language in enumerate(languages):
            rows_by_language.setdefault(language, []).append(row)
        if len(rows_by_language) == 1:
            (language,) = rows_by_language
            return _match_rows_in_order(self.automaton(language), texts)
        found_per_row: list[list[int]] = [[]] * len(texts)
        for language, rows in rows_by_language.items():
            automaton = self.automaton(language)
            if automaton is None:
                continue
            iterate = automaton.iter
            for row in rows:
                found = {global_id for _, global_id in iterate(space_text(texts[row]))}
                if found:
                    found_per_row[row] = sorted(found)
        lengths = np.fromiter(map(len, found_per_row), dtype=np.int64, count=len(texts))
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((gid for ids in found_per_row for gid in ids), dtype=np.int32, count=int(offsets[-1]))
        return offsets, flat


def _match_rows_in_order(automaton: ahocorasick.Automaton | None, texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """All rows against one automaton: the MetaCLIP 1 loop of `EntryMatcher.match_batch`."""
    offsets = [0]
    flat: list[int] = []
    if automaton is None:
        offsets.extend(0 for _ in texts)
    else:
        iterate = automaton.iter
        extend = flat.extend
        append = offsets.append
        for text in texts:
            found = {global_id for _, global_id in iterate(space_text(text))}
            extend(sorted(found) if len(found) > 1 else found)
            append(len(flat))
    return np.asarray(offsets, dtype=np.int64), np.asarray(flat, dtype=np.int32)


# ---------------------------------------------------------------------------
# A t per language (curation-spec.md, section 6)
# ---------------------------------------------------------------------------
#
# Decisions, and why (the MetaCLIP 2 reference's `t_to_p` / `p_to_t` were read
# for them; docs/worldwide.md has a worked example):
#
# * The tail at t is the entries balancing keeps whole: count <= t
#   (p_e = 1 iff count <= t, spec section 6). tail_share(t) = sum of the counts
#   <= t / sum of all counts. The reference's per-language search computes
#   exactly this (cumulative sums of the sorted counts, each including the count
#   at that position), while its English share uses count < t_en. The two agree
#   unless an English entry's count equals t_en exactly; using one definition on
#   both sides means a language whose counts equal English's gets English's tail
#   (the same entries kept whole), which "<" on both sides would not give.
# * Candidates: the distinct positive counts of the language. Between two of
#   them the share does not change, so nothing else could be closer; 0 is left
#   out (t = 0 would drop every caption of the language, and 0/0 in the
#   reference gives NaN).
# * Closest: smallest |tail_share(t) - English's share|, compared exactly in
#   integers (no float ties); on an exact tie the smaller t, as the reference's
#   argmin over ascending counts picks the first.
# * English keeps t_en itself (as in the reference). A language whose counts
#   are all 0 gets t_en (no caption of it matches, t changes nothing). If no
#   caption matched an English entry, English's share is undefined: every
#   language gets t_en, MetaCLIP 1's single-t rule.


def tail_share(counts: np.ndarray, t: int) -> float:
    """The spec's tail_share(t): the share of all matches on entries with count below t (count < t)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("the tail share is undefined when every count is 0")
    return int(counts[counts < t].sum()) / total


def threshold_for_tail_share(counts: np.ndarray, share_numerator: int, share_denominator: int) -> int | None:
    """The t among `counts`' distinct positive values whose tail share is closest to the given share.

    The share is the fraction `share_numerator / share_denominator`, compared
    exactly; ties go to the smaller t. None when every count is 0 or the
    share's denominator is 0.
    """
    counts = np.asarray(counts, dtype=np.int64)
    values, multiplicities = np.unique(counts[counts > 0], return_counts=True)
    if len(values) == 0 or share_denominator <= 0:
        return None
    # Tail share of candidate values[k] is at_or_below[k] / total; strictly increasing in k.
    at_or_below = np.cumsum(values * multiplicities).tolist()
    total = at_or_below[-1]
    # Compare a/total with n/d as a*d with n*total: Python ints, no overflow, no float ties.
    target = share_numerator * total
    k = bisect.bisect_left(at_or_below, target, key=lambda mass: mass * share_denominator)
    candidates = [i for i in (k - 1, k) if 0 <= i < len(values)]
    best = min(candidates, key=lambda i: (abs(at_or_below[i] * share_denominator - target), values[i]))
    return int(values[best])


def language_thresholds(counts: np.ndarray, metadata: LanguageMetadata, t_reference: int, reference: str = "en") -> dict[str, int]:
    """t for every language of the metadata: English `t_reference`, the others matched to its tail share.

    `counts` is the global count array (one int64 per global id). Raises
    MetadataError when the metadata has no list for `reference`.
    """
    require_language(metadata, reference)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (metadata.num_entries,):
        raise ValueError(f"counts has shape {counts.shape}, the metadata {metadata.num_entries} global ids")
    if t_reference < 1:
        raise ValueError(f"the reference threshold must be >= 1, got {t_reference}")

    def counts_of(language: str) -> np.ndarray:
        span = metadata.entry_range(language)
        return counts[span.start : span.stop]

    reference_counts = counts_of(reference)
    # English's share counts strictly below t_en (the spec's "below t", the
    # reference's `< t_en`); a candidate t of another language counts its own
    # entries too (the reference's cumulative sum): tail_share(t + 1).
    share_numerator = int(reference_counts[reference_counts < t_reference].sum())
    share_denominator = int(reference_counts.sum())
    thresholds = {}
    for language in metadata.languages:
        t = None
        if language != reference:
            t = threshold_for_tail_share(counts_of(language), share_numerator, share_denominator)
        thresholds[language] = t_reference if t is None else t
    return thresholds


def entry_thresholds(metadata: LanguageMetadata, thresholds: Mapping[str, int]) -> np.ndarray:
    """t of every global id (int64), for `balancing.entry_probabilities(counts, per-entry t)`."""
    missing = [language for language in metadata.languages if language not in thresholds]
    if missing:
        raise KeyError(f"no threshold for language(s) {', '.join(missing)}")
    return np.repeat(np.asarray([thresholds[language] for language in metadata.languages], dtype=np.int64), metadata.sizes)
