"""Benchmarks and the PyTorch reference port (torch is an optional extra)."""
