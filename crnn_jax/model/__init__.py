"""The CRNN (SPEC.md section 4) in Flax linen: ``layers.py`` holds its blocks,
``crnn.py`` the model and ``create_model(config.model, ...)``, ``summary.py``
the per-layer table of ``--mode=summary``."""

from crnn_jax.model.crnn import (
    CRNN,
    abstract_variables,
    compute_dtype,
    count_params,
    create_model,
    dummy_inputs,
)

__all__ = ['CRNN', 'abstract_variables', 'compute_dtype', 'count_params', 'create_model',
           'dummy_inputs']
