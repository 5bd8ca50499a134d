"""Experiment configs (ml_collections, big_vision style): `get_config(arg)` per file, shared defaults in `common`."""
