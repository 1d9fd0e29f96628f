"""The CRNN (SPEC.md section 4) in Flax linen: ``layers.py`` holds its blocks,
``crnn.py`` the model and ``create_model(config.model, ...)``, ``summary.py``
the per-layer table of ``--mode=summary``."""

from crnn_jax.model.crnn import CRNN, compute_dtype, count_params, create_model

__all__ = ['CRNN', 'compute_dtype', 'count_params', 'create_model']
