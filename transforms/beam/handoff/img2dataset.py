"""WriteImg2datasetShards: the kept rows as img2dataset input (`url`, `caption`, the key)."""

from __future__ import annotations

import functools
from typing import Optional

import pyarrow as pa

from transforms.beam.sink import WriteShards
from transforms.beam.write import ParquetShards
from transforms.core.columns import KEY, TEXT, TEXTS

__all__ = ["IMG2DATASET_CAPTION", "IMG2DATASET_URL", "WriteImg2datasetShards", "img2dataset_schema"]

IMG2DATASET_URL = "url"
IMG2DATASET_CAPTION = "caption"


def img2dataset_schema(key_column: str, with_texts: bool = False) -> pa.Schema:
    texts = [(TEXTS, pa.list_(pa.string()))] if with_texts else []
    return pa.schema(
        [(IMG2DATASET_URL, pa.string()), (IMG2DATASET_CAPTION, pa.string()), (key_column, pa.string())] + texts
    )


def _img2dataset_table(schema: pa.Schema, table: pa.Table) -> pa.Table:
    columns = [table.column("url").cast(pa.string()), table.column(TEXT), table.column(KEY)]
    if TEXTS in schema.names:
        columns.append(table.column(TEXTS))
    return pa.table(columns, schema=schema)


class WriteImg2datasetShards(WriteShards):
    """The kept rows as img2dataset input: `url`, `caption` and the key (`key_column`), and with
    `with_texts` every text of the sample (`texts`: the caption first; --save_additional_columns
    carries it into img2dataset's own .json).

    In: sampled batches with a `url` column. Out: ShardsWritten. Sharded and sorted
    like WriteParquetShards (by key hash; by key, source file and row), so the files
    are the same bytes on every runner. Read them with
    `img2dataset --input_format parquet --url_col url --caption_col caption`.
    """

    def __init__(
        self,
        directory: str,
        num_shards: int,
        key_column: str,
        spill_dir: Optional[str] = None,
        with_texts: bool = False,
    ):
        schema = img2dataset_schema(key_column, with_texts)
        columns = ["url", TEXT] + ([TEXTS] if with_texts else [])
        fmt = ParquetShards(
            schema, kept_only=True, columns=columns, project=functools.partial(_img2dataset_table, schema)
        )
        super().__init__(directory, num_shards, fmt, spill_dir, spill_label="img2dataset")
