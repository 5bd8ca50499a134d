"""Raw media and label files → precomputed feature shards (the offline half of emohd)."""
