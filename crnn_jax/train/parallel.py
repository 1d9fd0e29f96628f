"""Data parallelism with jax.sharding: a Mesh over every device, the batch
split on 'data', the state replicated."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from crnn_jax.core import xla_defaults
from crnn_jax.core.errors import UserError
from crnn_jax.train import steps


class Parallel:
  """The mesh and the jitted steps over it."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.mesh = Mesh(np.asarray(jax.devices()), ('data',))
    self.replicated = NamedSharding(self.mesh, P())
    self.data = NamedSharding(self.mesh, P('data'))
    n = jax.device_count()
    accum = max(int(config.train.grad_accum_steps), 1)
    sizes = {'batch_size / grad_accum_steps': config.train.batch_size // accum,
             'eval_batch_size': config.train.eval_batch_size}
    for field, size in sizes.items():
      if size % n:
        raise UserError(f'config.train.{field} = {size} is not divisible by the {n} devices; '
                        f'choose a multiple of {n}')

  def shard_batch(self, local_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(self.data, np.asarray(v))
            for k, v in local_batch.items()}

  def replicate(self, tree: Any) -> Any:
    return jax.device_put(tree, self.replicated)

  def jit_train_step(self, multilabel: bool, options: steps.TrainOptions | None = None
                     ) -> Callable:
    options = options or steps.TrainOptions()
    return jax.jit(functools.partial(steps.train_step, multilabel=multilabel, options=options),
                   in_shardings=(self.replicated, self.data, self.replicated),
                   out_shardings=(self.replicated, self.replicated), donate_argnums=0)

  def jit_eval_step(self, multilabel: bool) -> Callable:
    platform = self.mesh.devices.flat[0].platform
    return jax.jit(functools.partial(steps.eval_step, multilabel=multilabel),
                   in_shardings=(self.replicated, self.data), out_shardings=self.replicated,
                   compiler_options=xla_defaults.inference_compiler_options(platform))
