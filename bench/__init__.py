"""Benchmarks of the real stack; `python -m bench.run_all` writes docs/BENCHMARKS.md."""
