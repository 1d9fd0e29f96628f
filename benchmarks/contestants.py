"""The train and eval steps the benchmarks time: crnn_jax's own and the PyTorch
port's, on the same batch, on CPU or GPU, in float32 or bfloat16.

crnn_jax runs ``crnn_jax.train.steps.train_step`` / ``eval_step`` as training
does (jit, donated state, uint8 input converted on the device); bfloat16 is
``config.train.dtype='bfloat16'`` (float32 parameters and batch-norm
statistics). The port runs crnn_jax/reference/torch_model.py with fastai's AdamW,
NCHW or channels_last, optionally through ``torch.compile``, bfloat16 through
``torch.autocast``; its input is the same uint8 batch, converted on the device
each step too.

``no_gru=True`` builds the same model without its recurrent part (the conv
features go straight to the readout, which keeps its 1,280 inputs), so the
GRU's share of a step is 1 - time(no_gru) / time(full).

Import this module after XLA_FLAGS are final: it imports jax.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from configs import genres
from crnn_jax.core import labels as labels_lib
from crnn_jax.core import xla_defaults
from crnn_jax.data.info import DataInfo
from crnn_jax.train import state as state_lib
from crnn_jax.train import steps as steps_lib

NUM_CLASSES = len(labels_lib.GENRES)
N_MELS = 128


def make_batch(batch: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
  """The benchmark's batch: uint8 spectrogram images and labels, seeded by B."""
  rng = np.random.default_rng(batch)
  images = rng.integers(0, 256, size=(batch, N_MELS, frames), dtype=np.uint8)
  return images, (np.arange(batch) % NUM_CLASSES).astype(np.int32)


@dataclasses.dataclass
class Steps:
  """One contestant at one batch size.

  ``train()`` / ``eval()`` launch one step and return a handle; ``sync(handle)``
  waits for it (steps may run asynchronously on a GPU). ``compile_s``: XLA's
  compile time (JAX) or the first, autotuning step (torch), per mode.
  ``memory_bytes``: per mode, XLA's buffer assignment of the compiled step
  (arguments + outputs + temporaries) for JAX; torch fills it on a GPU from
  ``torch.cuda.max_memory_allocated`` after timing (see ``peak_memory``).
  """
  train: Callable[[], Any]
  eval: Callable[[], Any]
  sync: Callable[[Any], None]
  compile_s: dict[str, float]
  memory_bytes: dict[str, float | None]
  flops: dict[str, float]
  peak_memory: Callable[[], float | None] = lambda: None
  reset_peak_memory: Callable[[], None] = lambda: None


def jax_config(dtype: str = 'float32', no_gru: bool = False, gru_unroll: Any = None) -> Any:
  """The genre config with the benchmark's overrides."""
  config = genres.get_config()
  config.train.dtype = dtype
  if no_gru:
    config.model.gru_layers = 0
  if gru_unroll is not None:
    config.model.gru_unroll = gru_unroll
  return config


def jax_steps(images: np.ndarray, labels: np.ndarray, config: Any,
              device: jax.Device | None = None) -> Steps:
  """crnn_jax's jitted train and eval steps on ``device`` (default: the first)."""
  batch, _, frames = images.shape
  info = DataInfo(name='bench', class_names=tuple(labels_lib.GENRES), num_tabular=0,
                  categorical_encoding='raw', split_sizes={}, frames=frames, metadata={})
  device = device or jax.devices()[0]
  state = jax.device_put(state_lib.create_train_state(
      config, info, jax.random.key(0), state_lib.make_optimizer(config, 1000 * 10)), device)
  data = jax.device_put({
      'spectrogram': images, 'label': labels, 'tabular': np.zeros((batch, 0), np.float32),
      'label_set': np.eye(NUM_CLASSES, dtype=np.uint8)[labels],
      'mask': np.ones(batch, np.float32)}, device)
  weights = jax.device_put(np.ones(NUM_CLASSES, np.float32), device)
  train_jit = jax.jit(functools.partial(steps_lib.train_step, multilabel=False), donate_argnums=0)
  eval_jit = jax.jit(functools.partial(steps_lib.eval_step, multilabel=False),
                     compiler_options=xla_defaults.inference_compiler_options(
                         device.platform))
  compiled, compile_s, memory, flops = {}, {}, {}, {}
  for mode, fn, args in (('train', train_jit, (state, data, weights)),
                         ('eval', eval_jit, (state, data))):
    tic = time.perf_counter()
    compiled[mode] = fn.lower(*args).compile()
    compile_s[mode] = time.perf_counter() - tic
    memory[mode] = _step_bytes(compiled[mode])
    flops[mode] = _flops(compiled[mode])
  holder = {'state': state}

  def train() -> Any:
    holder['state'], metrics = compiled['train'](holder['state'], data, weights)
    return metrics['loss']

  def evaluate() -> Any:
    return compiled['eval'](holder['state'], data)['logits']

  return Steps(train, evaluate, jax.block_until_ready, compile_s, memory, flops)


def _step_bytes(compiled: Any) -> float | None:
  """Arguments + outputs (less donated aliases) + temporaries of a compiled step."""
  try:
    m = compiled.memory_analysis()
    return float(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                 + m.temp_size_in_bytes)
  except (AttributeError, NotImplementedError, TypeError):
    return None


def _flops(compiled: Any) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', 0.0)) if cost else 0.0


def torch_steps(images: np.ndarray, labels: np.ndarray, channels_last: bool,
                device: str = 'cpu', dtype: str = 'float32', no_gru: bool = False,
                compiled: bool = False) -> Steps:
  """The PyTorch port's train and eval steps (fastai's AdamW, one-cycle);
  ``compiled``: the model through ``torch.compile`` (the optimiser stays eager)."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  from crnn_jax.reference import torch_model as tr  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  model = tr.GenreCRNN(frames=images.shape[-1])
  if no_gru:
    model.rnn.gru = _passthrough_gru()
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(device=device, memory_format=memory_format)
  forward = torch.compile(model) if compiled else model
  x_uint8 = torch.from_numpy(images).to(device)
  y = torch.from_numpy(labels.astype(np.int64)).to(device)
  sched = tr.OneCycle(1000 * 10, 1.445e-3)
  opt = tr.FastaiAdamW(model.parameters(), lr=sched.lr, beta1=sched.beta1)
  autocast = functools.partial(torch.autocast, device_type=torch.device(device).type,
                               dtype=torch.bfloat16, enabled=dtype == 'bfloat16')

  def inputs() -> Any:
    x = x_uint8[:, None].float().div_(255.0)
    return x.contiguous(memory_format=memory_format)

  def train() -> Any:
    model.train()
    with autocast():
      loss = F.nll_loss(forward(inputs()), y)
    opt.zero_grad()
    loss.backward()
    opt.step(sched.lr, sched.beta1)
    sched.on_batch_end()
    return loss.detach()

  def evaluate() -> Any:
    model.eval()
    with torch.no_grad(), autocast():
      return forward(inputs())

  def sync(handle: Any) -> None:
    if device.startswith('cuda'):
      torch.cuda.synchronize(device)
    else:
      handle.float().cpu().numpy()

  compile_s = {mode: _seconds(lambda fn=fn: sync(fn())) for mode, fn in
               (('train', train), ('eval', evaluate))}
  steps = Steps(train, evaluate, sync, compile_s, {'train': None, 'eval': None}, {})
  if device.startswith('cuda'):
    steps.peak_memory = lambda: float(torch.cuda.max_memory_allocated(device))
    steps.reset_peak_memory = lambda: torch.cuda.reset_peak_memory_stats(device)
  return steps


def _seconds(fn: Callable[[], Any]) -> float:
  tic = time.perf_counter()
  fn()
  return time.perf_counter() - tic


def _passthrough_gru() -> Any:
  """Stands in for ``nn.GRU``: the sequence unchanged, as (output, state)."""
  import torch  # pylint: disable=import-outside-toplevel

  class PassThroughGRU(torch.nn.Module):
    def forward(self, seq: Any) -> tuple[Any, None]:
      return seq, None

  return PassThroughGRU()
