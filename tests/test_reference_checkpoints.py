"""The reference's own trained checkpoints: crnn_jax computes what PyTorch does.

For both files in ../shared/reference/checkpoints (never copied into this
repository), on spectrograms made through the full audio path (synthetic demo
clips written to disk, decoded, SPEC.md section 2 contract): crnn_jax's
log-probabilities equal the PyTorch port's (crnn_jax/reference/torch_model.py
loading the same file) within 1e-4 at batch sizes 1 and 8, so top-1 agrees on
every clip. Skipped without torch, or where the shared folder is absent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE_CHECKPOINTS

torch = pytest.importorskip('torch')

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` run without `python -m`
  sys.path.insert(0, str(ROOT))

import jax

from configs import genres, metal
from crnn_jax import import_reference
from crnn_jax import model as models
from crnn_jax.core import audio, labels
from crnn_jax.inference.predictor import Predictor
from crnn_jax.reference import torch_model as tr
from crnn_jax.reference import weights as rw
from crnn_jax.workdir import checkpoints

CHECKPOINTS = REFERENCE_CHECKPOINTS
FILES = {'genre': 'crnn_genre_model.pth', 'metal': 'crnn_concat_metal_model.pth'}
CONFIGS = {'genre': genres, 'metal': metal}
NUM_CLIPS = 8

pytestmark = pytest.mark.skipif(
    not all((CHECKPOINTS / f).is_file() for f in FILES.values()),
    reason=f'reference checkpoints not found in {CHECKPOINTS} (set CRNN_JAX_REFERENCE_CHECKPOINTS '
    'to their folder)')


@pytest.fixture(scope='module')
def clips(tmp_path_factory) -> tuple[list[Path], np.ndarray]:
  """8 demo audio files and their (8, 128, 1292, 1) model inputs."""
  import soundfile as sf  # pylint: disable=import-outside-toplevel

  from data_prep import demo  # pylint: disable=import-outside-toplevel
  folder = tmp_path_factory.mktemp('clips')
  images, paths = [], []
  for i in range(NUM_CLIPS):
    style = demo.STYLES[i % len(demo.STYLES)]
    # 20 s at 44.1 kHz stereo: decoding resamples, downmixes and pads to 30 s
    y = demo.synthesize(style, seed=11, index=i, seconds=20.0, sample_rate=44_100, channels=2)
    path = folder / f'{style}_{i}.wav'
    sf.write(path, y, 44_100)
    images.append(audio.spectrogram_image(audio.fixed_window(audio.load_audio(path))))
    paths.append(path)
  return paths, audio.image_to_model_input(np.stack(images))


@pytest.fixture(scope='module')
def spectrograms(clips) -> np.ndarray:
  """The model inputs, made as data preparation and prediction make them."""
  return clips[1]


@pytest.fixture(scope='module')
def tabular() -> np.ndarray:
  """16 inputs per clip as the reference fed them: raw codes, then standardised."""
  rng = np.random.default_rng(4)
  codes = np.stack([rng.integers(1, 3, NUM_CLIPS), rng.integers(1, 13, NUM_CLIPS),
                    rng.integers(1, 3, NUM_CLIPS)], axis=1)
  return np.concatenate([codes, rng.normal(size=(NUM_CLIPS, 13))], axis=1).astype(np.float32)


@pytest.fixture(scope='module', params=list(FILES))
def pair(request):
  """(head, torch port with the checkpoint, crnn_jax model, converted variables)."""
  head = request.param
  path = CHECKPOINTS / FILES[head]
  port = tr.load_reference_model(path)
  state_dict = tr.state_dict_from_checkpoint(tr.load_checkpoint_file(path))
  config = CONFIGS[head].get_config()
  num_tabular = 16 if head == 'metal' else 0
  model = models.create_model(config.model, len(config.data.class_names), num_tabular)
  template = jax.eval_shape(
      model.init, jax.random.key(0), np.zeros((1, 128, 1292, 1), np.float32),
      np.zeros((1, num_tabular), np.float32) if num_tabular else None)
  variables = rw.convert_for(state_dict, template)
  return head, port, model, variables


@pytest.mark.parametrize('batch', [1, 8])
def test_log_probs_match_pytorch(pair, spectrograms, tabular, batch):
  head, port, model, variables = pair
  tab = tabular if head == 'metal' else None
  apply = jax.jit(model.apply)
  got, want = [], []
  for start in range(0, NUM_CLIPS, batch):
    spec = spectrograms[start:start + batch]
    t = None if tab is None else tab[start:start + batch]
    got.append(np.asarray(jax.nn.log_softmax(apply(variables, spec, t))))
    with torch.no_grad():
      want.append(port(torch.from_numpy(np.ascontiguousarray(spec.transpose(0, 3, 1, 2))),
                       None if t is None else torch.from_numpy(t)).numpy())
  got, want = np.concatenate(got), np.concatenate(want)
  assert got.shape == (NUM_CLIPS, 10 if head == 'genre' else 20)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
  np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
  # trained weights: confident, non-uniform predictions (a zeroed or
  # mis-mapped head would give near-uniform ones)
  assert np.exp(got.max(-1)).mean() > 2.0 / got.shape[1]


@pytest.mark.slow  # ~15 s: write_workdir and load_for_use each compile the model's init
def test_imported_genre_model_predicts_demo_clips_like_pytorch(clips, tmp_path):
  """python -m crnn_jax.import_reference's workdir, through the prediction
  command's code (crnn_jax.predict: decode, spectrogram, batch) on demo audio
  files: the same top-3 as the PyTorch port on every clip."""
  paths, spectrograms = clips
  path = CHECKPOINTS / FILES['genre']
  workdir = str(tmp_path / 'genres')
  import_reference.import_checkpoint(str(path), genres.get_config(), workdir)
  info = checkpoints.load_for_use(workdir).data_info
  assert info['class_names'] == list(labels.GENRES)  # reference index order
  assert info['frames'] == 1292 and info['metadata']['clip']['seconds'] == 30.0
  results = Predictor.from_workdir(workdir).predict_files([str(p) for p in paths],
                                                                   top_k=3)
  with torch.no_grad():
    want = tr.load_reference_model(path)(
        torch.from_numpy(np.ascontiguousarray(spectrograms.transpose(0, 3, 1, 2)))).numpy()
  for result, log_probs in zip(results, want):
    assert 'error' not in result, result
    assert [e['genre'] for e in result['top_k']] == [
        labels.GENRES[i] for i in np.argsort(-log_probs)[:3]]
    got = np.array([result['probabilities'][g] for g in labels.GENRES])
    np.testing.assert_allclose(got, np.exp(log_probs), atol=1e-4, rtol=0)
