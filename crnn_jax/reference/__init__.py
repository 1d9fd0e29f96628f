"""The reference's PyTorch checkpoints: reading them safely (torch_pickle.py) and mapping
their tensors onto crnn_jax variables and back (weights.py)."""
