"""Batch-norm statistics recomputed on training clips (config.eval.recompute_bn).

Running averages with momentum 0.9 remember the last ~10 steps and take ~44
to forget their start. A short run (a small data set, large batches) ends with
statistics that describe neither the final network nor the data, and
evaluation on them can put every clip in one class. Recomputing them, with the
network in training mode and a plain average over batches of the training
split ("precise BN"), gives the final network's own statistics. Variances
average each batch's, updated as the model's batch norm does (PyTorch's
unbiased estimate for the reference variant).
"""

from __future__ import annotations

import jax
import numpy as np

from crnn_jax.data import pipeline
from crnn_jax.train import steps
from crnn_jax.train.setup import Run, StepPlan
from crnn_jax.train.state import TrainState, create_model

ORDER_STREAM = 0xB5  # a random stream of its own: the batches are the same in every call


def recompute(run: Run, plan: StepPlan, state: TrainState) -> TrainState:
  """``state`` with batch statistics averaged over training batches of the
  micro-batch size (at most config.eval.recompute_bn_batches; 0: all)."""
  config = run.config
  model = create_model(config, run.info).clone(bn_momentum=0.0)  # each call: the batch's own

  @jax.jit
  def batch_stats(variables, batch):
    spec, tab = steps.model_inputs(batch)
    _, updates = model.apply(variables, spec, tab, train=True, mutable=['batch_stats'])
    return updates['batch_stats']

  n = run.info.split_sizes['train']
  order = np.random.default_rng([config.seed, ORDER_STREAM]).permutation(n)
  limit = int(config.eval.get('recompute_bn_batches', 0))
  if limit > 0:
    order = order[:limit * plan.micro_batch]
  batches = pipeline.train_batches(run.reader('train'), order, plan.micro_batch)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  total, count = None, 0
  for batch in batches:
    stats = batch_stats(variables, run.parallel.shard_batch(batch))
    total = stats if total is None else jax.tree_util.tree_map(lambda a, b: a + b, total, stats)
    count += 1
  if not count:
    return state
  mean = jax.tree_util.tree_map(lambda x: x / count, total)
  return state.replace(batch_stats=run.parallel.replicate(mean))
