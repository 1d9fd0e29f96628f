"""The reference system in PyTorch, rebuilt from docs/reference.md sections 4 and 5.

It is the yardstick for crnn_jax: parity tests compare log-probabilities,
batch-norm statistics, optimiser steps and schedules against it, the
benchmark times it, and it loads the reference's own checkpoints with strict
key and shape matching (so its module names are the reference's: ``cnn.conv{i}.{0,1}``,
``rnn.gru``, ``rnn.linear``; metal ``rnn.fc``, ``fcn.fc1``, ``fcn.fc2``, ``final_layer``).

Training follows fastai v1 as the reference used it: ``fit_one_cycle`` with
``OptimWrapper(Adam, true_wd=True, bn_wd=True)``, i.e. decoupled weight decay
``p *= 1 - lr * wd`` applied before a plain Adam step (beta2 0.99, eps 1e-8),
and the one-cycle schedule on lr and beta1 evaluated exactly as fastai's
``Scheduler`` does.

torch is an optional dependency (``pip install -e '.[torch]'``), imported at the
top here: tests and benchmarks import this module, the library never does (an
import-linter contract).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crnn_jax.reference.torch_pickle import numpy_safe_globals

N_MELS = 128
REFERENCE_FRAMES = 1292
POOL_WINDOWS = ((2, 2), (2, 2), (2, 2), (4, 2), (4, 4))  # (mel, time)
CHANNELS = 64
GRU_FEATURES = 64
NUM_TABULAR = 16


def output_size(mel: int, frames: int) -> tuple[int, int]:
  """(mel, time) after the five floor-mode pools: (1, 20) for (128, 1292)."""
  for ph, pw in POOL_WINDOWS:
    mel, frames = mel // ph, frames // pw
  return mel, frames


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------
def _conv_block(in_channels: int, window: tuple[int, int]) -> nn.Sequential:
  """Sequential indices 0 (conv) and 1 (batch norm) are the checkpoint's names."""
  return nn.Sequential(
      nn.Conv2d(in_channels, CHANNELS, kernel_size=3, padding=1, bias=True),
      nn.BatchNorm2d(CHANNELS, eps=1e-5, momentum=0.1),
      nn.ReLU(),
      nn.MaxPool2d(kernel_size=window, stride=window, ceil_mode=False),
  )


class CNN(nn.Module):
  """Five conv blocks: (B, 1, 128, frames) -> (B, 64, 1, time)."""

  def __init__(self):
    super().__init__()
    for i, window in enumerate(POOL_WINDOWS):
      self.add_module(f'conv{i + 1}', _conv_block(1 if i == 0 else CHANNELS, window))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for i in range(len(POOL_WINDOWS)):
      x = getattr(self, f'conv{i + 1}')(x)
    return x


class RNN(nn.Module):
  """Two-layer GRU over time, time-major flatten, then one dense layer.

  The dense layer is ``linear`` (1280 -> classes) in the genre model and
  ``fc`` (1280 -> 64) in the metal model, as in the reference's state_dicts.
  """

  def __init__(self, time_steps: int, out_features: int, head_name: str):
    super().__init__()
    self.head_name = head_name
    self.gru = nn.GRU(CHANNELS, GRU_FEATURES, num_layers=2, batch_first=True)
    self.add_module(head_name, nn.Linear(time_steps * GRU_FEATURES, out_features))

  def forward(self, features: torch.Tensor) -> torch.Tensor:
    b, c, h, t = features.shape
    # (B, C, 1, T) -> (B, T, C). The reference squeezes every unit axis,
    # which breaks a batch of one (docs/reference.md section 7); this keeps the batch.
    seq = features.reshape(b, c * h, t).permute(0, 2, 1)
    out, _ = self.gru(seq)  # zero initial state
    return getattr(self, self.head_name)(out.reshape(b, -1))  # index t * 64 + c


class FCN(nn.Module):
  """Tabular MLP 16 -> 32 -> 32, ReLU after both."""

  def __init__(self, in_features: int = NUM_TABULAR):
    super().__init__()
    self.fc1 = nn.Linear(in_features, 32)
    self.fc2 = nn.Linear(32, 32)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.relu(self.fc2(F.relu(self.fc1(x))))


class GenreCRNN(nn.Module):
  """The genre model: audio only, log-softmax over 10 classes (211,722 params)."""

  def __init__(self, num_classes: int = 10, frames: int = REFERENCE_FRAMES):
    super().__init__()
    mel, time_steps = output_size(N_MELS, frames)
    if mel != 1 or time_steps < 1:
      raise ValueError(f'{frames} frames do not reduce to (1, T>=1); got ({mel}, {time_steps})')
    self.cnn = CNN()
    self.rnn = RNN(time_steps, num_classes, 'linear')

  def forward(self, spectrogram: torch.Tensor,
              tabular: torch.Tensor | None = None) -> torch.Tensor:
    del tabular  # accepted so both models share a call signature
    return F.log_softmax(self.rnn(self.cnn(spectrogram)), dim=-1)


class MetalCRNN(nn.Module):
  """The metal model: audio -> 64 (no activation) ++ tabular MLP -> 20 (284,436)."""

  def __init__(self, num_classes: int = 20, frames: int = REFERENCE_FRAMES,
               num_tabular: int = NUM_TABULAR):
    super().__init__()
    mel, time_steps = output_size(N_MELS, frames)
    if mel != 1 or time_steps < 1:
      raise ValueError(f'{frames} frames do not reduce to (1, T>=1); got ({mel}, {time_steps})')
    self.cnn = CNN()
    self.rnn = RNN(time_steps, 64, 'fc')
    self.fcn = FCN(num_tabular)
    self.final_layer = nn.Linear(64 + 32, num_classes)

  def forward(self, spectrogram: torch.Tensor,
              tabular: torch.Tensor | None = None) -> torch.Tensor:
    if tabular is None:
      raise ValueError('the metal model needs the 16 tabular inputs')
    joined = torch.cat([self.rnn(self.cnn(spectrogram)), self.fcn(tabular)], dim=1)
    return F.log_softmax(self.final_layer(joined), dim=-1)


def count_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------
def load_checkpoint_file(path: str | os.PathLike) -> dict:
  """Unpickles a reference checkpoint without running code from the file.

  ``weights_only=True`` refuses every global not allow-listed; the list adds
  only numpy scalar and dtype types, which the ``opt`` entry holds (shared
  with crnn_jax.reference.torch_pickle). Never ``weights_only=False`` on a file a
  user hands over.
  """
  with torch.serialization.safe_globals(numpy_safe_globals()):
    return torch.load(os.fspath(path), map_location='cpu', weights_only=True)


def state_dict_from_checkpoint(obj) -> dict[str, torch.Tensor]:
  """The state_dict inside a reference checkpoint (or the object itself if bare)."""
  if isinstance(obj, dict) and isinstance(obj.get('model'), dict):
    obj = obj['model']
  if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
    raise ValueError('not a reference checkpoint: expected a dict with a "model" state_dict')
  return obj


def model_from_state_dict(state_dict: dict[str, torch.Tensor]) -> nn.Module:
  """Builds the matching model (genre or metal) and loads it strictly."""
  if 'rnn.linear.weight' in state_dict:
    num_classes, flat = state_dict['rnn.linear.weight'].shape
    model = GenreCRNN(num_classes, frames_for_time_steps(flat // GRU_FEATURES))
  elif 'rnn.fc.weight' in state_dict and 'final_layer.weight' in state_dict:
    flat = state_dict['rnn.fc.weight'].shape[1]
    model = MetalCRNN(state_dict['final_layer.weight'].shape[0],
                      frames_for_time_steps(flat // GRU_FEATURES),
                      state_dict['fcn.fc1.weight'].shape[1])
  else:
    raise ValueError('not a reference state_dict: neither rnn.linear nor rnn.fc + final_layer')
  model.load_state_dict(state_dict, strict=True)
  return model


def load_reference_model(path: str | os.PathLike) -> nn.Module:
  """A reference checkpoint file -> the model in eval mode."""
  return model_from_state_dict(state_dict_from_checkpoint(load_checkpoint_file(path))).eval()


def frames_for_time_steps(time_steps: int) -> int:
  """The smallest frame count the pools reduce to ``time_steps`` (20 -> 1,280; 1,292 gives 20 too)."""
  total = math.prod(w for _, w in POOL_WINDOWS)
  return time_steps * total


# --------------------------------------------------------------------------
# Training recipe (fastai v1)
# --------------------------------------------------------------------------
def annealing_cos(start: float, end: float, pct: float) -> float:
  """fastai's cosine from start (pct 0) to end (pct 1)."""
  return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


class _Scheduler:
  """fastai v1 ``Scheduler``: step() increments n, then returns func(n / n_iter)."""

  def __init__(self, start: float, end: float, n_iter: int):
    self.start, self.end, self.n_iter, self.n = start, end, max(1, n_iter), 0

  def step(self) -> float:
    self.n += 1
    return annealing_cos(self.start, self.end, self.n / self.n_iter)

  @property
  def is_done(self) -> bool:
    return self.n >= self.n_iter


class OneCycle:
  """fastai v1 ``OneCycleScheduler`` over ``total_steps`` batches.

  ``lr`` / ``beta1`` are the values the next batch trains with: the start
  values for step 0, then whatever ``on_batch_end`` computed after each batch.
  Phases: a1 = int(pct_start * n) steps max_lr/div -> max_lr, then n - a1
  steps to max_lr / final_div (default div * 1e4, i.e. max_lr / 250,000).
  """

  def __init__(self, total_steps: int, max_lr: float, moms: tuple[float, float] = (0.95, 0.85),
               div_factor: float = 25.0, pct_start: float = 0.3,
               final_div: float | None = None):
    final_div = div_factor * 1e4 if final_div is None else final_div
    a1 = int(total_steps * pct_start)
    a2 = total_steps - a1
    self.lr_scheds = [_Scheduler(max_lr / div_factor, max_lr, a1),
                      _Scheduler(max_lr, max_lr / final_div, a2)]
    self.mom_scheds = [_Scheduler(moms[0], moms[1], a1), _Scheduler(moms[1], moms[0], a2)]
    self.lr, self.beta1 = self.lr_scheds[0].start, self.mom_scheds[0].start
    self.idx = 0

  def on_batch_end(self) -> bool:
    """Advances one batch; False once fastai would stop training."""
    if self.idx >= len(self.lr_scheds):
      return False
    self.lr = self.lr_scheds[self.idx].step()
    self.beta1 = self.mom_scheds[self.idx].step()
    if self.lr_scheds[self.idx].is_done:
      self.idx += 1
    return True


def one_cycle_values(total_steps: int, max_lr: float, **kwargs) -> tuple[np.ndarray, np.ndarray]:
  """(lr, beta1) used by each of ``total_steps`` training steps, as float64 arrays."""
  sched = OneCycle(total_steps, max_lr, **kwargs)
  lrs, moms = [], []
  for _ in range(total_steps):
    lrs.append(sched.lr)
    moms.append(sched.beta1)
    sched.on_batch_end()
  return np.asarray(lrs), np.asarray(moms)


class FastaiAdamW:
  """fastai v1 ``OptimWrapper(Adam, true_wd=True, bn_wd=True)``.

  Each step: every parameter (biases and batch norm included) is multiplied
  by 1 - lr * wd, then torch's Adam (weight_decay 0) steps with betas
  (beta1, beta2). lr and beta1 are set per step by the schedule.
  """

  def __init__(self, params, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.99,
               eps: float = 1e-8, weight_decay: float = 0.01):
    self.params = [p for p in params if p.requires_grad]
    self.wd = weight_decay
    self.opt = torch.optim.Adam(self.params, lr=lr, betas=(beta1, beta2), eps=eps,
                                weight_decay=0.0)

  def zero_grad(self) -> None:
    self.opt.zero_grad(set_to_none=True)

  @torch.no_grad()
  def step(self, lr: float, beta1: float) -> None:
    for group in self.opt.param_groups:
      group['lr'] = lr
      group['betas'] = (beta1, group['betas'][1])
    for p in self.params:
      p.mul_(1 - lr * self.wd)
    self.opt.step()


@dataclasses.dataclass
class Arrays:
  """A split in memory: spectrograms (N, 1, 128, frames) float32 in [0, 1],
  labels (N,) int64, optional tabular (N, k) float32 (already encoded)."""
  spectrograms: np.ndarray
  labels: np.ndarray
  tabular: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.labels)


def batches(data: Arrays, batch_size: int, order: np.ndarray | None = None,
            drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor | None,
                                                       torch.Tensor]]:
  """(spectrogram, tabular, label) tensors in ``order`` (default: as stored)."""
  order = np.arange(len(data)) if order is None else np.asarray(order)
  stop = len(order) - len(order) % batch_size if drop_last else len(order)
  for i in range(0, stop, batch_size):
    idx = order[i:i + batch_size]
    tab = None if data.tabular is None else torch.from_numpy(data.tabular[idx])
    yield (torch.from_numpy(data.spectrograms[idx]), tab, torch.from_numpy(data.labels[idx]))


def steps_per_epoch(num_examples: int, batch_size: int = 64) -> int:
  """Last partial batch dropped, as the reference's DataBunch did."""
  return num_examples // batch_size


def fit_one_cycle(model: nn.Module, train: Arrays, epochs: int, max_lr: float,
                  batch_size: int = 64, weight_decay: float = 0.01, seed: int = 0,
                  orders: Sequence[np.ndarray] | None = None,
                  log_every: int = 0) -> list[float]:
  """Trains as the reference did; returns each step's loss.

  ``orders`` gives each epoch's example order (to share one data order with
  crnn_jax); otherwise a permutation per epoch from ``seed``.
  """
  n_steps = steps_per_epoch(len(train), batch_size) * epochs
  sched = OneCycle(n_steps, max_lr)
  opt = FastaiAdamW(model.parameters(), lr=sched.lr, beta1=sched.beta1,
                    weight_decay=weight_decay)
  rng = np.random.default_rng(seed)
  losses = []
  for epoch in range(epochs):
    model.train()
    order = orders[epoch] if orders is not None else rng.permutation(len(train))
    for spec, tab, label in batches(train, batch_size, order, drop_last=True):
      loss = F.nll_loss(model(spec, tab), label)  # the model outputs log-probs
      opt.zero_grad()
      loss.backward()
      opt.step(sched.lr, sched.beta1)
      sched.on_batch_end()
      losses.append(float(loss.detach()))
      if log_every and len(losses) % log_every == 0:
        print(f'epoch {epoch} step {len(losses)}/{n_steps} loss {np.mean(losses[-log_every:]):.4f}')
  return losses


@torch.no_grad()
def predict_log_probs(model: nn.Module, data: Arrays, batch_size: int = 64) -> np.ndarray:
  """Eval-mode log-probabilities (N, classes)."""
  model.eval()
  return np.concatenate([model(spec, tab).numpy() for spec, tab, _ in batches(data, batch_size)])


def accuracy(log_probs: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
  top = np.argsort(-log_probs, axis=-1)[:, :k]
  return float(np.mean(np.any(top == labels[:, None], axis=-1)))
