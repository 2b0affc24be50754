"""Benchmarks: `python -m bench.delivery` (see bench/README.md)."""
