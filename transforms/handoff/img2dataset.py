"""The img2dataset command that downloads an `img2dataset/` output (no Beam import).

img2dataset gives every downloaded sample a `key` of its own, so the curation key travels
in a column named after the input's key field (`uid` for DataComp pools) or `source_key`;
`--save_additional_columns` must name that column, or img2dataset stops with
`ArrowInvalid: No match for FieldRef.Name(...)`.
"""

from __future__ import annotations

import json
import shlex


def img2dataset_command(
    list_dir: str, key_column: str, output_folder: str = "images/", extra_columns: tuple[str, ...] = ()
) -> str:
    """The shell command that downloads the kept images of `list_dir` as webdataset shards
    (`extra_columns`: more columns it carries into each sample's .json, such as `texts`)."""
    arguments = [
        "img2dataset", "--url_list", list_dir, "--input_format", "parquet", "--url_col", "url",
        "--caption_col", "caption", "--output_format", "webdataset",
        "--save_additional_columns", json.dumps([key_column, *extra_columns]), "--output_folder", output_folder,
    ]  # fmt: skip
    return " ".join(shlex.quote(argument) for argument in arguments)
