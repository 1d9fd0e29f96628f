"""The reference's trained models, shipped with crnn_jax, read without torch or
network, and the one way a command names a model to use: a shipped name or a
workdir (README.md here: what they are, where they come from, their license)."""
