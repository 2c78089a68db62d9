"""Benchmarks: `python -m bench [NAME...] [--quick]` (see __main__)."""
