"""The CRNN (docs/reference.md section 4) in Flax linen, and the functions that build it
from ``config.model``; docs/architecture.md lists the modules."""

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
