"""The synthetic demo library: layout, formats, determinism, idempotence, and
that its four styles are separable from the model's own input features."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from crnn_jax.core import audio
from data_prep import demo

CLIPS = 8
SECONDS = 3.0


@pytest.fixture(scope='module')
def library(tmp_path_factory) -> tuple[str, list[str]]:
  folder = str(tmp_path_factory.mktemp('demo_lib'))
  return folder, demo.generate_demo_library(folder, seed=0, clips_per_class=CLIPS, seconds=SECONDS)


def _label(folder: str, path: str) -> str:
  return os.path.relpath(path, folder).split(os.sep)[0]


def test_layout_labels_and_mixed_formats(library):
  folder, paths = library
  assert len(paths) == len(set(paths)) == CLIPS * len(demo.STYLES)
  assert sorted(os.listdir(folder)) == sorted(demo.STYLES)  # nothing else: the reader
  assert os.path.isfile(demo.manifest_file(folder))  # would report it
  labels = [_label(folder, p) for p in paths]
  assert {l: labels.count(l) for l in labels} == {s: CLIPS for s in demo.STYLES}
  exts, rates, channels = set(), set(), set()
  for p in paths:
    assert os.path.basename(p).startswith(_label(folder, p) + '_')
    info = sf.info(p)
    exts.add(p.rsplit('.', 1)[1])
    rates.add(info.samplerate)
    channels.add(info.channels)
    assert abs(info.frames / info.samplerate - SECONDS) < 0.01
    y = audio.load_audio(p)  # the real decoding path
    assert 0.05 < np.abs(y).max() <= 1.0 and abs(len(y) - SECONDS * audio.SAMPLE_RATE) <= 1
  assert exts == {'wav', 'flac', 'ogg'} and rates == {22_050, 44_100} and channels == {1, 2}
  # every class gets more than one container, so format cannot give the label away
  for s in demo.STYLES:
    assert len({p.rsplit('.', 1)[1] for p in paths if _label(folder, p) == s}) >= 2
  assert not [f for _, _, fs in os.walk(folder) for f in fs if f.endswith(('.partial', '.tmp'))]


def test_folder_reader_takes_every_clip_without_complaint(library):
  from data_prep import build_input as sources  # the reader `python -m data_prep build` uses
  folder, paths = library
  source = sources.read_folder(folder)
  assert not source.problems
  assert sorted(t.path for t in source.tracks) == sorted(os.path.abspath(p) for p in paths)
  assert {t.label for t in source.tracks} == set(demo.STYLES)


def test_deterministic_given_seed(library, tmp_path):
  folder, paths = library
  again = demo.generate_demo_library(str(tmp_path / 'b'), seed=0, clips_per_class=CLIPS,
                                     seconds=SECONDS)
  for p, q in zip(paths, again):
    assert os.path.relpath(p, folder) == os.path.relpath(q, tmp_path / 'b')
    np.testing.assert_array_equal(sf.read(p)[0], sf.read(q)[0])  # ogg serials differ, audio not
  other = demo.synthesize('metal', seed=1, index=0, seconds=SECONDS)
  assert not np.array_equal(other, demo.synthesize('metal', seed=0, index=0, seconds=SECONDS))


def test_idempotent_and_repairs_missing_files(tmp_path):
  folder = str(tmp_path / 'lib')
  paths = demo.generate_demo_library(folder, seed=1, clips_per_class=2, seconds=1.0)
  stamps = {p: os.stat(p).st_mtime_ns for p in paths}
  assert demo.generate_demo_library(folder, seed=1, clips_per_class=2, seconds=1.0) == paths
  assert {p: os.stat(p).st_mtime_ns for p in paths} == stamps
  victim = paths[3]
  reference = sf.read(victim)[0]
  os.remove(victim)
  demo.generate_demo_library(folder, seed=1, clips_per_class=2, seconds=1.0)
  np.testing.assert_array_equal(sf.read(victim)[0], reference)
  assert all(os.stat(p).st_mtime_ns == stamps[p] for p in paths if p != victim)
  # other arguments: clips are rewritten, and surplus clips of the old set removed
  fewer = demo.generate_demo_library(folder, seed=2, clips_per_class=1, seconds=1.0)
  assert sorted(fewer) == sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs)
  assert not np.array_equal(sf.read(paths[0])[0], reference)


def _features(path: str) -> np.ndarray:
  """Coarse summaries of the model's uint8 input image: mean level in 8 mel
  regions, spread over time and frame-to-frame change (percussive vs
  sustained) in 4."""
  image = audio.spectrogram_image(audio.load_audio(path), SECONDS).astype(np.float64)
  flux = np.abs(np.diff(image, axis=1)).mean(axis=1)
  group = lambda v, k: v.reshape(k, -1).mean(axis=1)
  return np.concatenate([group(image.mean(axis=1), 8), group(image.std(axis=1), 4),
                         group(flux, 4)])


def test_styles_differ_spectrally_but_clips_are_not_copies(library):
  folder, paths = library
  feats = np.stack([_features(p) for p in paths])
  labels = np.array([demo.STYLES.index(_label(folder, p)) for p in paths])
  # Leave-one-out nearest centroid on 16 crude numbers per clip already tells
  # the styles apart (chance: 0.25); the CRNN sees far more than this.
  correct = 0
  for i in range(len(paths)):
    rest = np.arange(len(paths)) != i
    mu, sd = feats[rest].mean(0), feats[rest].std(0) + 1e-6
    z = (feats - mu) / sd
    centroids = np.stack([z[rest & (labels == c)].mean(0) for c in range(len(demo.STYLES))])
    correct += int(np.argmin(((centroids - z[i]) ** 2).sum(1)) == labels[i])
  assert correct / len(paths) >= 0.85
  # within a class, clips vary (tempo, key, timbre, noise, gain): no two alike
  for c in range(len(demo.STYLES)):
    block = feats[labels == c]
    assert min(np.abs(block[i] - block[j]).mean() for i in range(CLIPS)
               for j in range(i + 1, CLIPS)) > 0.5


def test_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError):
    demo.generate_demo_library(str(tmp_path), clips_per_class=0)
  with pytest.raises(ValueError):
    demo.synthesize('polka', 0, 0)
