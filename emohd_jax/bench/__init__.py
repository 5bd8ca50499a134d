"""Benchmarks behind `emohd bench …`: each compares against a reference measured in the same run."""
