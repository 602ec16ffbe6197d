"""What one dedup kind's transform hands on (docs/dedup.md, section 4).

`--dedup url,text,semantic` is one stage that runs its kinds in that order, each on the
survivors of the one before. Each kind is a PTransform over record batches returning a
`KindOutput`; the stage chains them, writes every kind's `duplicates` to
`duplicates/part-*.parquet` and merges their figures into stats.json.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import pyarrow as pa
from apache_beam.pvalue import PCollection

# One row per record removed (docs/dedup.md, section 4); `similarity` is 1.0 for exact kinds.
DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("similarity", pa.float64()),
    ]
)


class KindOutput(NamedTuple):
    """One kind's result over the batches it was given."""

    survivors: PCollection  # [pa.RecordBatch]: the records kept, the input's schema
    duplicates: PCollection  # [pa.RecordBatch] of DUPLICATES_SCHEMA: one row per record removed
    figures: PCollection  # singleton dict: the kind's stats.json figures (JSON-able values)
    # semantic only: [pa.RecordBatch] of key, cluster, score (largest similarity to an earlier
    # member, which does not depend on eps), for every record the kind judged
    scores: Optional[PCollection] = None
