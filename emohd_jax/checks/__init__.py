"""`emohd check …`: measurements of the shipped bundle and trained runs that no single tower's eval makes — the
fusion checks, cross-corpus tables (LOCO, faces_wild through the predictor) and the voice robustness table.
They sit above `serve/` and `train/` because they drive both."""
