"""Benchmarks: `python -m bench.run` measures the service and writes docs/benchmarks.md."""
