"""The reference's PyTorch checkpoints, read safely and mapped onto crnn_jax
variables and back; and a PyTorch port of the reference that the tests and
benchmarks compare against (the library never imports it)."""
