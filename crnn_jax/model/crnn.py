"""The CRNN of the reference (docs/reference.md section 4) in Flax linen.

Input: spectrograms shaped (batch, mel, frames, 1), values in [0, 1], plus an
optional tabular vector (batch, num_tabular). Output: class logits; apply
``jax.nn.log_softmax`` for the reference's log-probabilities.

Every architectural choice that differs between the faithful reference and an
improved variant is a field of :class:`CRNN`, filled from ``config.model`` by
:func:`create_model`, so variants need no code change. The fields' defaults are
the reference's (configs/default.py states the same values for runs). The model
knows nothing of training, files or torch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from crnn_jax.model.layers import GRU, Array, ConvBlock, GRUWeights, torch_kernel_init, uniform_init


class CRNN(nn.Module):
  """Conv blocks -> stacked GRU over time -> readout -> head(s).

  With ``num_tabular > 0`` it is the reference's metal model: the audio
  readout goes through ``audio_fc`` (1280 -> 64, no activation in the
  reference), the tabular vector through a ReLU MLP, and ``final_layer``
  classifies their concatenation.
  """

  num_classes: int
  conv_features: Sequence[int] = (64, 64, 64, 64, 64)
  pool_windows: Sequence[tuple[int, int]] = ((2, 2), (2, 2), (2, 2), (4, 2), (4, 4))
  gru_features: int = 64
  gru_layers: int = 2
  gru_hidden_bias_rz: bool = True
  gru_unroll: int | bool = 1  # time steps per scan iteration (True: all); same outputs
  readout: str = 'flatten'  # 'flatten' (reference) | 'last' | 'mean'
  num_tabular: int = 0
  tabular_features: Sequence[int] = (32, 32)
  audio_fc_features: int = 64
  audio_activation: str = 'none'  # reference metal head: 'none'; improved: 'relu'
  torch_init: bool = True
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_unbiased_running_var: bool = True  # PyTorch's running-variance update
  dtype: Any = jnp.float32

  def _dense(self, features: int, fan_in: int, name: str) -> nn.Dense:
    inits = {}
    if self.torch_init:
      inits = {'kernel_init': torch_kernel_init(),
                   'bias_init': uniform_init(1.0 / math.sqrt(fan_in))}
    return nn.Dense(features, dtype=self.dtype, name=name, **inits)

  @nn.compact
  def __call__(self, spectrogram: Array, tabular: Array | None = None,
               train: bool = False, return_embedding: bool = False,
               frozen_batch_norm: bool = False) -> Array | tuple[Array, Array]:
    """Logits; with ``return_embedding``, (logits, embedding).

    ``train``: a program to differentiate, batch norm on the batch's statistics
    (updating the running ones); with ``frozen_batch_norm`` batch norm uses the
    running statistics and leaves them as they are (fine-tuning on them).

    The embedding is the input of the classifier layer (``classifier_name``):
    the readout (1,280 wide for the reference's flatten, the GRU width for
    mean/last) in the genre model; in the metal model the concatenation of
    ``audio_fc``'s output and the tabular MLP's (64 + 32). Asking for it
    changes no operation, so the logits stay the same.
    """
    if spectrogram.ndim == 3:
      spectrogram = spectrogram[..., None]
    x = spectrogram.astype(self.dtype)
    for i, (features, window) in enumerate(zip(self.conv_features, self.pool_windows)):
      x = ConvBlock(features, tuple(window), torch_init=self.torch_init,
                    bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                    bn_unbiased_running_var=self.bn_unbiased_running_var,
                    dtype=self.dtype, name=f'conv{i + 1}')(x, train, frozen_batch_norm)

    # (B, H, T, C) -> (B, T, H*C): time is the sequence axis. With the
    # reference's pools H is 1, so this is the reference's squeeze + permute
    # (without its batch-of-one bug).
    b, h, t, c = x.shape
    seq = x.transpose(0, 2, 1, 3).reshape(b, t, h * c)

    gru_inits = {}
    if self.torch_init:
      bound = 1.0 / math.sqrt(self.gru_features)
      gru_inits = {'kernel_init': uniform_init(bound),
                       'recurrent_kernel_init': uniform_init(bound),
                       'bias_init': uniform_init(bound)}
    for layer in range(self.gru_layers):  # parameters in gru_l{k}, outputs from rnn_l{k}
      weights = GRUWeights(self.gru_features, hidden_bias_rz=self.gru_hidden_bias_rz,
                           name=f'gru_l{layer}', **gru_inits)
      seq = GRU(weights, unroll=self.gru_unroll, dtype=self.dtype, name=f'rnn_l{layer}')(seq)

    if self.readout == 'flatten':  # time-major: index t * features + c
      feats = seq.reshape(b, -1)
    elif self.readout == 'last':
      feats = seq[:, -1]
    elif self.readout == 'mean':
      feats = seq.mean(axis=1)
    else:
      raise ValueError(f"unknown readout {self.readout!r}: use 'flatten', 'last' or 'mean'")

    embedding = self._with_tabular(feats, tabular) if self.num_tabular else feats
    logits = self._dense(self.num_classes, embedding.shape[-1],
                         self.classifier_name())(embedding).astype(jnp.float32)
    return (logits, embedding) if return_embedding else logits

  def _with_tabular(self, feats: Array, tabular: Array | None) -> Array:
    """The metal model's audio readout through audio_fc, joined with the tabular MLP's output."""
    if tabular is None:
      raise ValueError(f'this model needs {self.num_tabular} tabular inputs; got none')
    audio = self._dense(self.audio_fc_features, feats.shape[-1], 'audio_fc')(feats)
    if self.audio_activation == 'relu':
      audio = nn.relu(audio)
    elif self.audio_activation != 'none':
      raise ValueError(f"unknown audio_activation {self.audio_activation!r}")
    tab = tabular.astype(self.dtype)
    for i, features in enumerate(self.tabular_features):
      tab = nn.relu(self._dense(features, tab.shape[-1], f'tab_fc{i + 1}')(tab))
    return jnp.concatenate([audio, tab], axis=-1)

  def classifier_name(self) -> str:
    """The parameters of the classifier layer, the last one (the reference's names)."""
    return 'final_layer' if self.num_tabular else 'linear'


COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(name: str) -> Any:
  """config.train.dtype -> the dtype the model computes in; ValueError if unknown."""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"config.train.dtype {name!r}: use 'float32' or 'bfloat16'")
  return COMPUTE_DTYPES[name]


def create_model(model_config: ml_collections.ConfigDict, num_classes: int,
                 num_tabular: int, dtype: Any = jnp.float32) -> CRNN:
  """Builds the CRNN described by ``config.model``."""
  m = model_config
  return CRNN(
      num_classes=num_classes,
      conv_features=tuple(m.conv_features),
      pool_windows=tuple(tuple(w) for w in m.pool_windows),
      gru_features=m.gru_features,
      gru_layers=m.gru_layers,
      gru_hidden_bias_rz=m.gru_hidden_bias_rz,
      gru_unroll=m.get('gru_unroll', 1),  # workdirs saved before the field: no unroll
      readout=m.readout,
      num_tabular=num_tabular,
      tabular_features=tuple(m.tabular_features),
      audio_fc_features=m.audio_fc_features,
      audio_activation=m.audio_activation,
      torch_init=m.init == 'torch',
      bn_momentum=m.bn_momentum,
      bn_epsilon=m.bn_epsilon,
      bn_unbiased_running_var=m.bn_unbiased_running_var,
      dtype=dtype,
  )


def dummy_inputs(model: CRNN, mels: int, frames: int, batch: int = 1
                 ) -> tuple[jax.Array, jax.Array | None]:
  """Zeros shaped like a batch of the model's input (spectrograms (batch, mels,
  frames, 1), tabular columns where it takes them): what init and eval_shape trace."""
  spec = jnp.zeros((batch, mels, frames, 1), jnp.float32)
  tab = jnp.zeros((batch, model.num_tabular), jnp.float32) if model.num_tabular else None
  return spec, tab


def abstract_variables(model: CRNN, mels: int, frames: int) -> dict[str, Any]:
  """Shapes and dtypes of the model's {'params', 'batch_stats'}, without compiling."""
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                             *dummy_inputs(model, mels, frames))
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def count_params(params: Any) -> int:
  return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
