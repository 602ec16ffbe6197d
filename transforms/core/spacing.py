"""Caption spacing: the text normalisation MetaCLIP applies before matching.

Pure Python, no Beam import: the pipeline, the tests, the benchmarks and the
training-time loader all call this very function (docs/curation-spec.md, section 2).
"""

# The seven ASCII characters MetaCLIP wraps in spaces, and the three white-space
# characters it turns into one space. Nothing else is touched: no lower-casing,
# no collapsing of repeated spaces, no Unicode normalisation.
WRAPPED_PUNCTUATION = ",.;:?!`"
SPACED_WHITESPACE = "\t\n\r"


def space_text(text: str) -> str:
    """Return `text` spaced for matching: stripped, padded, punctuation wrapped.

    >>> space_text("a golden retriever!")
    ' a golden retriever !  '
    """
    # One str.replace per character, as MetaCLIP's reference writes it: each is a
    # C-speed scan, ~0.6 us a LAION caption where one str.translate with a table
    # took ~2.3 us (benchmarks/bench_first_run.py). The order does not matter: no
    # replacement produces a character that another one rewrites.
    return (
        (" " + text.strip() + " ")
        .replace(",", " , ")
        .replace(".", " . ")
        .replace(";", " ; ")
        .replace(":", " : ")
        .replace("?", " ? ")
        .replace("!", " ! ")
        .replace("`", " ` ")
        .replace("\t", " ")
        .replace("\n", " ")
        .replace("\r", " ")
    )


def pad_entry(entry: str) -> str:
    """The form of a metadata entry that must occur in a spaced caption."""
    return " " + entry + " "


def can_ever_match(entry: str) -> bool:
    """False for entries that no spaced caption can contain.

    A tab, newline or carriage return never survives spacing; nor does one of
    the wrapped punctuation marks unless it already has a space on each side
    inside the entry (``"a ."`` can match ``"a."``; ``"3.5"`` never can).
    """
    padded = pad_entry(entry)
    if any(c in padded for c in SPACED_WHITESPACE):
        return False
    for i, c in enumerate(padded):
        if c in WRAPPED_PUNCTUATION and (padded[i - 1] != " " or padded[i + 1] != " "):
            return False
    return True
