"""MetaCLIP 2 worldwide mode: language codes -> metadata languages (`LanguageMap`).

Pure Python, no Beam import (docs/worldwide.md). Codes come from a caption's
language field or a language-id model; `--language_map` maps them, and
`LanguageMap.resolver` finds the metadata language of each.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from transforms.worldwide.metadata import normalize_language_code


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
                raise ValueError(
                    f"{source}: code {code!r} must map to a language code (a non-empty string), not {language!r}"
                )
            if not code.strip():
                raise ValueError(f"{source}: an empty code maps to {language!r}")
            key = normalize_language_code(code)
            if mapping.get(key, language.strip()) != language.strip():
                raise ValueError(
                    f"{source}: code {code!r} is mapped twice, to {mapping[key]!r} and {language.strip()!r}"
                )
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
            raise ValueError(
                f"{source}: {item.strip()!r} is not CODE=LANGUAGE (expected e.g. zh-cn=zh,zh-tw=zh or a JSON file)"
            )
        pairs.append((code.strip(), language.strip()))
    return pairs
