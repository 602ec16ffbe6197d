"""Dedup semantics (docs/dedup.md): exact url/text keys and survivors, SemDeDup, its k-means. No Beam."""
