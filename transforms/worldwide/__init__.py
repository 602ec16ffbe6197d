"""MetaCLIP 2 "worldwide" mode: per-language metadata, CJK-aware padding, a t per language.

Pure Python and numpy, no Beam import (docs/curation-spec.md, sections 4 and 6;
docs/worldwide.md). The pipeline, the tests and any training-time loader call
these same functions. One module per part; this file imports and re-exports
nothing, so import each name from its own module:

- `padding` (`pad_entry_worldwide`): which ends of an entry get a space.
- `metadata` (`LanguageMetadata`): one list per language, one global id space.
- `language_map` (`LanguageMap`): language codes -> metadata languages.
- `matcher` (`WorldwideMatcher`): each caption against its own language's list.
- `thresholds` (`language_thresholds`): a t per language.
- `language_id` (`LanguageIdentifier`): the bundled fastText language-id model.

Where the published MetaCLIP 2 reference code is ambiguous or does not run, the
choice made here is written next to the code that makes it.
"""
