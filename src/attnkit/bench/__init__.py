"""Benchmarks that print ratios against reference implementations, measured in one process."""
