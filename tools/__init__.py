"""Developer tools for tests, the demo and benchmarks (not part of the gpux package)."""
