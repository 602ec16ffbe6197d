"""BalanceBeam's transforms: pure curation functions and the Beam PTransforms that wrap them."""
