"""Tiny workdirs for the tests of inference, embeddings, export and the web page.

A workdir written with from_weights.write_workdir: 5-s clips, four classes,
freshly drawn (untrained) but well-scaled weights, so outputs clearly depend
on the input and no training or init compile is needed. Audio comes from the
demo synthesiser (data_prep.demo).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import soundfile as sf

from configs import default
from crnn_jax import model as models
from crnn_jax.core import audio
from crnn_jax.data.info import DataInfo
from crnn_jax.train import from_weights
from crnn_jax.train import state as train_state
from data_prep import demo

CLIP = 5.0
MIN_SECONDS = 2.0
CLASSES = ['electronic', 'metal', 'strings', 'swing']
SR = audio.SAMPLE_RATE


def data_info(tab_names=(), categorical=None, mean=(), std=(), clip: float = CLIP) -> dict:
  metadata = {
      'class_names': CLASSES, 'tabular_names': list(tab_names),
      'tabular_categorical': dict(categorical or {}), 'tabular_mean': list(mean),
      'tabular_std': list(std),
      'clip': {'seconds': clip, 'position': 'start', 'min_seconds': MIN_SECONDS},
  }
  return {'name': 'predict_test', 'class_names': CLASSES, 'num_tabular': len(tab_names),
          'categorical_encoding': 'raw', 'split_sizes': {},
          'frames': audio.num_frames(clip), 'metadata': metadata}


def variables(config, info: dict, seed: int) -> dict:
  """Arbitrary but well-scaled weights (He-style kernels, unit batch-norm
  scales): outputs clearly depend on the input, no init compile needed."""
  parsed = DataInfo.from_json(info)
  model = train_state.create_model(config, parsed)
  spec, tab = models.dummy_inputs(model, *train_state.input_size(parsed))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), spec, tab, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith(("['var']", "['scale']")):
      return np.ones(leaf.shape, np.float32)
    if name.endswith("['mean']"):
      return np.zeros(leaf.shape, np.float32)
    if name.endswith("['kernel']"):
      std = 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
      return (rng.normal(size=leaf.shape) * std).astype(np.float32)
    return (0.1 * rng.normal(size=leaf.shape)).astype(np.float32)

  filled = jax.tree_util.tree_map_with_path(fill, shapes)
  return {'params': filled['params'], 'batch_stats': filled['batch_stats']}


def make_workdir(workdir: Path, config=None, info: dict | None = None, seed: int = 1
                 ) -> tuple[object, dict, dict, str]:
  """(config, data_info, variables, workdir) of a saved tiny model."""
  config = config or default.get_config()
  info = info or data_info()
  weights = variables(config, info, seed)
  from_weights.write_workdir(str(workdir), config, weights, info)
  return config, info, weights, str(workdir)


def write_clip(path: Path, style: str, seconds: float, index: int = 0, rate: int = SR) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  opus = {'format': 'OGG', 'subtype': 'OPUS'} if path.suffix == '.opus' else {}  # 8-48 kHz only
  sf.write(str(path), demo.synthesize(style, seed=3, index=index, seconds=seconds,
                                      sample_rate=rate), rate, **opus)
  return path


def direct_logits(config, info, weights, images, tab=None) -> np.ndarray:
  """What the model says about these uint8 images, without crnn_jax.inference."""
  model = train_state.create_model(config, DataInfo.from_json(info))
  x = np.stack(images).astype(np.float32)[..., None] / 255.0
  return np.asarray(model.apply(weights, x, tab, train=False), np.float64)
