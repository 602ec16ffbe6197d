"""Beam metric namespaces: what Dataflow's, Flink's or the local runner's counters are grouped by.

"curation" holds the run's totals (files_read, records_read, records_rejected,
files_rejected, records_matched, entry_matches, records_sampled, records_kept,
reshard_samples_copied, records_passed_filters), the same figures as stats.json; per reject reason,
"rejected" counts records and "rejected_files" whole files; per filter, "filtered" the records it dropped.
"""

CURATION = "curation"
REJECTED_RECORDS = "rejected"
REJECTED_FILES = "rejected_files"
# Records a DataComp filter dropped, per filter (the first each record fails).
FILTERED = "filtered"
