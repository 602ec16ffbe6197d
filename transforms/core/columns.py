"""Column names of the Arrow batches that flow through the pipeline."""

KEY = "key"
TEXT = "text"
# Where each accepted record came from: (index of its file in the sorted input
# list, row in that file). They order duplicate keys deterministically and are
# dropped before anything is written.
SOURCE_FILE = "__source_file"
SOURCE_ROW = "__source_row"
# Pass-through columns of webdataset inputs: the tar shard a sample came from, and its
# webdataset __key__ (equal to `key` unless --key_field takes the key from the .json).
SHARD = "shard"
WDS_KEY = "wds_key"
ENTRY_IDS = "entry_ids"  # list<int32>, ascending
KEEP_PROB = "keep_prob"  # float64
KEY_HASH = "__key_hash"  # uint64, BLAKE2b-64 of the key; internal
KEPT = "__kept"  # bool; internal
# --mode metaclip2: the metadata language a caption was matched against (internal;
# written as `lang` in matches/, beside entry ids local to that language's list).
LANGUAGE = "__language"
LANG = "lang"
# --per_image and extra texts: every text of a sample (the original first), list<string>.
TEXTS = "texts"
