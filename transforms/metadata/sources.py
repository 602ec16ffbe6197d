"""MetaCLIP 1's metadata sources: WordNet head names and Wikipedia counts.

No Beam import. `python -m beam_pipeline.metadata build` reads the files and
calls these functions; the tests call them on hand-made inputs. The choices
follow MetaCLIP's `build_metadata.py`: WordNet synset head names plus "0".."99",
Wikipedia unigrams seen >= 100 times, bigrams with PMI >= 30 (nltk's
collocation finder), article titles with >= 70 page views; empty entries and
single ASCII punctuation marks are dropped. Unlike the reference, the order of
the list is fixed (see `assemble`), so the same inputs always give the same ids.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import string
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from transforms.core.spacing import space_text

DEBIAN_WORDNET_DIR = "/usr/share/wordnet"
NUMBERS = tuple(str(i) for i in range(100))
# MetaCLIP's `forbidden`: an entry that is one ASCII punctuation mark is dropped.
FORBIDDEN = frozenset(string.punctuation)

WORDNET_HOWTO = (
    "install Debian's WordNet database (`apt-get install wordnet-base`, it goes to /usr/share/wordnet) "
    "or pass --wordnet_dir DIR (a WordNet 3.0 dict directory), or get nltk's copy where the internet "
    "is reachable (`python -m nltk.downloader wordnet`)"
)

# WordNet 3.0's lexicographer files (lexnames(5WN)). nltk needs the `lexnames`
# file, which Debian's wordnet-base does not ship; it only names synset groups.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_LEX_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_WORDNET_FILES = tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv"))
_WORDNET_OPTIONAL_FILES = ("noun.exc", "verb.exc", "adj.exc", "adv.exc", "cntlist.rev", "lexnames", "index.sense")


class SourceError(ValueError):
    """An input that cannot be used: one line naming the file and the problem."""


# ---------------------------------------------------------------- WordNet


@dataclass(frozen=True)
class WordNetLocation:
    """Where WordNet comes from: nltk's own data, or a WordNet database directory."""

    kind: str  # "nltk" or "directory"
    path: str


def _database_dir(directory: str) -> Optional[str]:
    for candidate in (directory, os.path.join(directory, "corpora", "wordnet")):
        if os.path.isfile(os.path.join(candidate, "data.noun")):
            return candidate
    return None


def locate_wordnet(wordnet_dir: Optional[str] = None) -> WordNetLocation:
    """The WordNet to read: `wordnet_dir` if given, else nltk's data, else Debian's.

    Raises SourceError (one line saying how to get WordNet) when there is none.
    Nothing is ever downloaded.
    """
    if wordnet_dir:
        found = _database_dir(wordnet_dir)
        if found is None:
            raise SourceError(
                f"--wordnet_dir {wordnet_dir} holds no WordNet database "
                f"(no data.noun in it or in corpora/wordnet); {WORDNET_HOWTO}"
            )
        return WordNetLocation("directory", found)
    import nltk.data

    try:
        pointer = nltk.data.find("corpora/wordnet")
    except LookupError:
        pass
    else:
        return WordNetLocation("nltk", str(getattr(pointer, "path", pointer)))
    if _database_dir(DEBIAN_WORDNET_DIR):
        return WordNetLocation("directory", DEBIAN_WORDNET_DIR)
    raise SourceError(
        f"WordNet not found (nltk has no wordnet data and {DEBIAN_WORDNET_DIR} is missing): {WORDNET_HOWTO}"
    )


def _prepare_nltk_dir(database: str, root: str) -> str:
    """Lay `database` out as nltk wants it under `root`/corpora/wordnet.

    nltk refuses symbolic links that leave its data root, so the files are
    copied (~30 MB). Debian lacks `lexnames` (generated from the WordNet 3.0
    list) and `index.sense` (only used to map between WordNet versions: empty).
    """
    target = os.path.join(root, "corpora", "wordnet")
    os.makedirs(target)
    for name in _WORDNET_FILES + _WORDNET_OPTIONAL_FILES:
        source = os.path.join(database, name)
        if os.path.isfile(source):
            shutil.copyfile(source, os.path.join(target, name))
        elif name in _WORDNET_FILES:
            raise SourceError(f"WordNet directory {database} lacks {name}")
    if not os.path.exists(os.path.join(target, "lexnames")):
        with open(os.path.join(target, "lexnames"), "w", encoding="ascii") as handle:
            for number, name in enumerate(_LEXNAMES):
                handle.write(f"{number:02d}\t{name}\t{_LEX_CATEGORY[name.split('.')[0]]}\n")
    open(os.path.join(target, "index.sense"), "a").close()
    return target


@contextlib.contextmanager
def open_wordnet(location: WordNetLocation) -> Iterator:
    """An nltk WordNetCorpusReader over `location`, valid inside the block."""
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    with warnings.catch_warnings():
        # "The multilingual functions are not available": we only read English synsets.
        warnings.simplefilter("ignore", UserWarning)
        if location.kind == "nltk":
            # A reader of our own rather than nltk.corpus.wordnet, whose loaded
            # state would outlive this block.
            yield WordNetCorpusReader(nltk.data.find("corpora/wordnet"), None)
            return
        with tempfile.TemporaryDirectory(prefix="balancebeam-wordnet-") as root:
            directory = _prepare_nltk_dir(location.path, root)
            # nltk reads only under its data path, and its reader looks the
            # "wordnet" corpus up there for index.sense: put ours first, for now.
            nltk.data.path.insert(0, root)
            try:
                yield WordNetCorpusReader(directory, None)
            finally:
                nltk.data.path.remove(root)


def head_name(synset_name: str) -> str:
    """MetaCLIP's entry for a synset: its name up to the FIRST dot, `_` to space.

    >>> head_name("et_al..r.01")
    'et al'
    """
    return synset_name[: synset_name.find(".")].replace("_", " ")


def wordnet_head_names(reader) -> set[str]:
    """The head name of every synset nltk's `reader` knows."""
    return {head_name(synset.name()) for synset in reader.all_synsets()}


def wordnet_version(reader) -> Optional[str]:
    try:
        return reader.get_version()
    except Exception:  # noqa: BLE001 - only a label for the sidecar
        return None


# ------------------------------------------------------------ count files


def tokenize(line: str) -> list[str]:
    """Words of a line of text as the counting job sees them.

    The spec's caption spacing first, so `dog,` counts as `dog` and `,` (what
    matching will see), then a split on white space.
    """
    return space_text(line).split()


def count_line(words: Iterable[str], count: int) -> str:
    """One line of a count file: the words, then the count, separated by spaces."""
    return " ".join(words) + f" {count}"


def _is_count(text: str) -> bool:
    return text.isascii() and text.isdigit()


def read_counts(lines: Iterable[str], num_words: int, name: str) -> Counter:
    """Counts from `word [word2] count` lines (any white space between fields).

    Keys are single words (num_words=1) or word tuples; a key on several lines
    has its counts added. Blank lines are skipped; anything else raises
    SourceError naming `name` and the line number.
    """
    counts: Counter = Counter()
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != num_words + 1 or not _is_count(fields[-1]):
            shape = " ".join(["word"] * num_words) + " count"
            raise SourceError(
                f"{name}:{number}: expected `{shape}` (a non-negative integer count), got {line.rstrip()[:80]!r}"
            )
        key = fields[0] if num_words == 1 else tuple(fields[:-1])
        counts[key] += int(fields[-1])
    return counts


def read_title_views(lines: Iterable[str], name: str) -> Counter:
    """Page views from `title views` lines: the LAST field is the views.

    The title is what precedes it (it may hold spaces); `_` becomes a space
    and surrounding white space is stripped. Titles on several lines add up.
    """
    views: Counter = Counter()
    for number, line in enumerate(lines, 1):
        fields = line.rsplit(None, 1)
        if not fields:
            continue
        if len(fields) != 2 or not _is_count(fields[1]):
            raise SourceError(
                f"{name}:{number}: expected `title views` (a non-negative integer), got {line.rstrip()[:80]!r}"
            )
        views[fields[0].replace("_", " ").strip()] += int(fields[1])
    return views


# --------------------------------------------------------------- selection


def select_unigrams(counts: Counter, min_count: int = 100) -> set[str]:
    """Words seen at least `min_count` times."""
    return {word for word, count in counts.items() if count >= min_count}


@dataclass
class BigramSelection:
    entries: set[str]
    scored: int  # bigrams given a PMI
    unknown_word: int  # bigrams dropped: a word missing from the unigram counts
    below_min_count: int


def select_bigrams(
    word_counts: Counter, bigram_counts: Counter, min_pmi: float = 30.0, min_bigram_count: int = 1
) -> BigramSelection:
    """`w1 w2` for every bigram whose PMI is >= `min_pmi`, by nltk's finder.

    PMI = log2(n(w1 w2) * N / (n(w1) * n(w2))) with N the total of
    `word_counts`, as nltk's BigramCollocationFinder scores it. As in MetaCLIP,
    bigrams with a word missing from `word_counts` are left out; bigrams seen
    fewer than `min_bigram_count` times are too (nltk's apply_freq_filter).
    """
    from nltk.collocations import BigramAssocMeasures, BigramCollocationFinder
    from nltk.probability import FreqDist

    word_fd = FreqDist({word: count for word, count in word_counts.items() if count > 0})
    bigram_fd = FreqDist()
    unknown = rare = 0
    for (w1, w2), count in bigram_counts.items():
        if count < max(1, min_bigram_count):
            rare += 1
        elif w1 not in word_fd or w2 not in word_fd:
            unknown += 1
        else:
            bigram_fd[(w1, w2)] = count
    finder = BigramCollocationFinder(word_fd, bigram_fd)
    entries = set()
    for (w1, w2), score in finder.score_ngrams(BigramAssocMeasures.pmi):
        if score < min_pmi:
            break  # score_ngrams is sorted by decreasing score
        entries.add(f"{w1} {w2}")
    return BigramSelection(entries, len(bigram_fd), unknown, rare)


def select_titles(views: Counter, min_views: int = 70) -> set[str]:
    """Titles with at least `min_views` views, except those holding `:` (namespaces)."""
    return {title for title, count in views.items() if count >= min_views and ":" not in title}


# ---------------------------------------------------------------- assembly


@dataclass
class SourceEntries:
    """One source's selected strings, and facts about it for the sidecar."""

    source: str
    candidates: set[str]
    details: dict = field(default_factory=dict)


def assemble(sources: Iterable[SourceEntries]) -> tuple[list[str], list[dict]]:
    """The metadata list and, per source, which ids it holds.

    Deterministic: sources in the given order, each source's new entries in
    code-point order (`sorted`), so ids never depend on hash seeds, input line
    order or shard order. An entry belongs to the first source that gives it.
    Empty entries and single ASCII punctuation marks are dropped (MetaCLIP's
    `forbidden`).
    """
    entries: list[str] = []
    seen: set[str] = set()
    blocks = []
    for source in sources:
        dropped = {entry for entry in source.candidates if not entry or entry in FORBIDDEN}
        kept = source.candidates - dropped
        new = sorted(kept - seen)
        blocks.append(
            {
                "source": source.source,
                "first_id": len(entries),
                "num_entries": len(new),
                "selected": len(source.candidates),
                "dropped_empty_or_punctuation": len(dropped),
                "already_in_earlier_source": len(kept) - len(new),
                **source.details,
            }
        )
        entries.extend(new)
        seen.update(new)
    return entries, blocks
