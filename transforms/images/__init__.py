"""Per-image curation (docs/dedup.md, "Images with several texts"): one sample per image. No Beam."""
