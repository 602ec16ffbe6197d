"""The reasons a record or file is not used, the `Rejection` that carries one, and --strict's error.

No Beam import: the readers, the statistics and the pipeline's reader DoFn share these.
`Rejection.to_json` is one line of rejected/*.jsonl; docs/fault-policy.md has the policy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional

# Rejection reasons, as written to rejected/ and counted in stats.json.
MISSING_TEXT = "missing_text"
NULL_TEXT = "null_text"
NON_STRING_TEXT = "non_string_text"
EMPTY_TEXT = "empty_text"
TEXT_TOO_LONG = "text_too_long"
INVALID_UTF8 = "invalid_utf8"
MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "not_a_json_object"
BAD_COLUMN_COUNT = "bad_column_count"
UNREADABLE_FILE = "unreadable_file"
SCHEMA_MISMATCH = "schema_mismatch"
NO_CAPTION_MEMBER = "no_caption_member"  # a webdataset sample without its caption member (.txt, or .json)
EMPTY_FILE = "empty_file"  # a file without a single byte (after decompression)
# Rows of a readable file that cannot be decoded, e.g. a corrupt Parquet row group: the
# rejection's row is the first lost row and `records` the count from the file's footer.
UNREADABLE_ROWS = "unreadable_rows"
# CLIP embeddings (transforms.formats.embeddings): a shard whose npz is missing, unreadable
# or of another row count (whole-file); a row whose embedding column holds no vector.
EMBEDDINGS_MISSING = "embeddings_missing"
EMBEDDINGS_UNREADABLE = "embeddings_unreadable"
EMBEDDINGS_ROW_MISMATCH = "embeddings_row_count_mismatch"
MISSING_EMBEDDING = "missing_embedding"
# A row whose vector, in an embedding the run's stages read, holds NaN or infinity, or is all
# zeros (every reader normalises it or compares directions): `raw` names the embedding.
BAD_EMBEDDING_VECTOR = "bad_embedding_vector"
ZERO_EMBEDDING_VECTOR = "zero_embedding_vector"
REASONS = (
    MISSING_TEXT,
    NULL_TEXT,
    NON_STRING_TEXT,
    EMPTY_TEXT,
    TEXT_TOO_LONG,
    INVALID_UTF8,
    MALFORMED_JSON,
    NOT_AN_OBJECT,
    BAD_COLUMN_COUNT,
    NO_CAPTION_MEMBER,
    SCHEMA_MISMATCH,
    UNREADABLE_ROWS,
    UNREADABLE_FILE,
    EMPTY_FILE,
    EMBEDDINGS_MISSING,
    EMBEDDINGS_UNREADABLE,
    EMBEDDINGS_ROW_MISMATCH,
    MISSING_EMBEDDING,
    BAD_EMBEDDING_VECTOR,
    ZERO_EMBEDDING_VECTOR,
)


STRICT_PREFIX = "--strict: "
# The one-line message inside whatever text a runner wraps the worker's error in: Beam
# appends " [while running 'STEP']", and a remote runner quotes it with the traceback.
_STRICT_MESSAGE = re.compile(re.escape(STRICT_PREFIX) + r"(?:(?!\\n)[^\n])*?: (?:" + "|".join(REASONS) + r")\b")


class StrictRejectionError(ValueError):
    """--strict: the run stops at the first rejected record or file.

    The message is one line, `--strict: <file> row <n>: <reason>`, or
    `--strict: <file>: <reason>` for a whole file (see `strict_error`).
    """


def _one_line(text: str) -> str:
    """`text` with control characters (a newline in a file name) escaped as \\xNN or \\uNNNN
    (never as \\n, which `strict_failure` takes for the end of a quoted line)."""
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def strict_error(rejection: "Rejection") -> StrictRejectionError:
    """The error --strict raises for a rejection."""
    where = _one_line(rejection.file) if rejection.row is None else f"{_one_line(rejection.file)} row {rejection.row}"
    return StrictRejectionError(f"{STRICT_PREFIX}{where}: {rejection.reason}")


def strict_failure(error: BaseException) -> Optional[str]:
    """The one-line --strict message carried by `error`, or None when it is another failure.

    Runners wrap a worker's exception: in-process Beam re-raises it with
    " [while running 'STEP']" appended, a multi-process or remote runner raises a
    RuntimeError whose text holds the worker's traceback. The message is found in the
    text of `error` and of its causes, whatever the wrapping.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found = _STRICT_MESSAGE.search(str(error))
        if found:
            return found.group(0)
        error = error.__cause__ or error.__context__
    return None


@dataclass(frozen=True)
class Rejection:
    """One input record (or a whole file, row None) that could not be used."""

    file: str
    row: Optional[int]
    reason: str
    raw: object = None
    records: int = 1  # how many input records this rejection stands for

    def to_json(self) -> str:
        """One line of rejected/*.jsonl; always valid UTF-8."""
        document = {
            "source": {"file": self.file, "row": self.row},
            "reason": self.reason,
            "records": self.records,
            "raw": self.raw,
        }
        line = json.dumps(document, ensure_ascii=False, sort_keys=True, default=repr)
        if not encodable(line):
            # A lone surrogate (JSON can spell "\ud800"): escaped, the line stays valid UTF-8.
            line = json.dumps(document, ensure_ascii=True, sort_keys=True, default=repr)
        return line


def encodable(value: str) -> bool:
    """Whether a str is valid Unicode for UTF-8: no lone surrogate (JSON's "\\ud800",
    a tar member name that was not UTF-8). Arrow refuses such strings."""
    if value.isascii():  # O(1) in CPython: the common case costs nothing
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
