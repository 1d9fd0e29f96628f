"""config.data.folder: from a folder of music to a model in one command
(main.py), and one line naming the fix for each folder that cannot make one.

The music is the demo synthesiser's (data_prep/demo.py), written as a user's
library is: ``folder/<class>/<file>``. The pretrained model is a tiny one
(tiny_models: 5-s clips, the demo's four class names), so the folder's clips
are 5 s long, as the pretrained model reads them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from tiny_models import CLIP, make_workdir, write_clip

from configs import finetune
from crnn_jax.core.errors import UserError
from crnn_jax.recipes import run as recipes
from data_prep import demo, folder

STYLES = demo.STYLES[:3]


def _library(root: Path, per_class: int = 6, styles=STYLES) -> Path:
  for c, style in enumerate(styles):
    for i in range(per_class):
      write_clip(root / style / f'{style}_{i}.wav', style, CLIP, index=10 * c + i)
  return root


def _corrupt(path: Path) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b'ID3' + bytes(range(256)) * 8)  # an mp3 header, then noise
  return path


def _config(library: Path, backbone: str = ''):
  config = finetune.get_config()
  config.data.folder = str(library)
  config.init_from = backbone
  return config


@pytest.fixture(scope='module')
def backbone(tmp_path_factory) -> str:
  return make_workdir(tmp_path_factory.mktemp('backbone'))[3]


def _main(*flags: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, 'main.py', '--config=configs/finetune.py', *flags],
                        check=False, cwd=ROOT, capture_output=True, text=True, timeout=600,
                        env={**os.environ, 'PYTHONPATH': ROOT})


def test_a_folder_to_a_model_in_one_command(backbone, tmp_path):
  """Prepared on first run (in the workdir), the model made, evaluated and
  the next command printed; that command predicts."""
  library = _library(tmp_path / 'My Styles')
  workdir = tmp_path / 'w'
  done = _main(f'--config.data.folder={library}', f'--config.init_from={backbone}',
               '--config.recipe=probe', f'--workdir={workdir}')
  assert done.returncode == 0, done.stderr[-3000:]
  assert (workdir / 'data' / 'my_styles' / '1.0.0').is_dir()  # the set, named after the folder
  results = json.loads((workdir / 'results.json').read_text())
  assert results['classes'] == list(STYLES) and results['test']['track']['count'] >= 3
  lines = done.stdout.splitlines()
  summary = next(line for line in lines if 'test: top-1' in line)
  assert '(95% interval' in summary and 'per track' in summary and 'tracks)' in summary
  command = next(line for line in lines if 'predict with it:' in line).split(': ', 1)[1]
  assert command.startswith(f'python -m crnn_jax.predict --workdir={workdir} ')
  song = write_clip(tmp_path / 'song.wav', 'metal', CLIP + 1, index=99)
  predicted = subprocess.run([sys.executable, *command.split()[1:4], str(song)], check=False,
                             cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, 'PYTHONPATH': ROOT})
  assert predicted.returncode == 0 and 'song.wav' in predicted.stdout, predicted.stderr[-2000:]


@pytest.mark.slow
def test_the_folder_command_chooses_its_recipe_by_cross_validation(backbone, tmp_path):
  """No recipe named: the candidates are cross-validated on the training
  split, the winner retrained, and its cross-validated figure printed and
  kept beside the test figure."""
  library = _library(tmp_path / 'styles', per_class=8)
  workdir = tmp_path / 'w'
  done = _main(f'--config.data.folder={library}', f'--config.init_from={backbone}',
               '--config.recipe_folds=2', '--config.recipe_candidates=probe,finetune',
               '--config.train.num_epochs=2', '--config.train.batch_size=4',
               f'--workdir={workdir}')
  assert done.returncode == 0, done.stderr[-3000:]
  out = done.stdout
  assert re.search(r'choosing the recipe by 2-fold cross-validation on the \d+ training clips '
                   r'\(folds grouped by artist, a track without one alone: \d+ groups\)', out)
  assert 'cross-validation: finetune, fold 2/2 took' in out and 'min of fold runs left' in out
  recipe = json.loads((workdir / 'results.json').read_text())['recipe']
  assert recipe['chosen'] in ('probe', 'finetune') and recipe['folds'] == 2
  assert set(recipe['cross_validated']) == {'probe', 'finetune', 'average'}
  chosen = recipe['cross_validated'][recipe['chosen']]
  low, high = chosen['track_top1_interval']
  assert f'recipe: {recipe["chosen"]}, chosen by 2-fold cross-validation' in out
  assert f'{recipe["chosen"]} {chosen["track_top1"]:.3f} ({low:.2f}-{high:.2f}' in out
  assert 'test: top-1' in out and 'predict with it:' in out


def test_bad_folders_are_one_line_each_naming_the_fix(tmp_path):
  with pytest.raises(UserError, match='does not exist: give a folder with one sub-folder'):
    folder.check_source(str(tmp_path / 'nowhere'))
  (tmp_path / 'flat').mkdir()
  with pytest.raises(UserError, match='holds no classes: put each class'):
    folder.check_source(str(tmp_path / 'flat'))
  one = _library(tmp_path / 'one', per_class=4, styles=('metal',))
  with pytest.raises(UserError, match=r"has one class \(metal\): a classifier needs two"):
    folder.check_source(str(one))
  empty = _library(tmp_path / 'empty', per_class=4, styles=('metal', 'swing'))
  (empty / 'strings').mkdir()
  (empty / 'strings' / 'notes.txt').write_text('no audio here')
  with pytest.raises(UserError, match=r"class folder .*strings' holds no audio files .*: add "):
    folder.check_source(str(empty))
  few = _library(tmp_path / 'few', per_class=4, styles=('metal', 'swing'))
  os.remove(few / 'swing' / 'swing_2.wav')
  with pytest.raises(UserError, match=r"class 'swing' has 3 track\(s\): splitting into train, "
                                      'validation and test needs at least 4 per class'):
    folder.check_source(str(few))
  # Choosing the recipe by 3-fold cross-validation: 3 tracks of a class in the
  # training split, one each in validation and test.
  four = _library(tmp_path / 'four', per_class=4, styles=('metal', 'swing'))
  assert folder.check_source(str(four)) == {'metal': 4, 'swing': 4}
  with pytest.raises(UserError, match=r"class 'metal' has 4 track\(s\): choosing the recipe by "
                                      r'3-fold cross-validation needs at least 5 per class .*'
                                      r'--config.recipe=probe\)$'):
    folder.check_source(str(four), cv_folds=3)
  assert folder.check_source(str(four), cv_folds=2) == {'metal': 4, 'swing': 4}


def test_unreadable_files_are_reported_and_a_class_they_empty_is_one_line(tmp_path, capsys):
  clip = recipes.clip_settings(_config(tmp_path))  # no init_from: 30-s clips at the centre
  assert (clip.seconds, clip.position) == (30.0, 'center')
  clip = type(clip)(seconds=CLIP, position='center', min_seconds=2.0)
  library = _library(tmp_path / 'lib', per_class=4)
  _corrupt(library / 'metal' / 'broken.mp3')
  config = folder.prepare(_config(library), str(tmp_path / 'w'), clip)
  assert (config.data.name, config.data.data_dir) == ('lib', str(tmp_path / 'w' / 'data'))
  out = capsys.readouterr().out
  assert 'warning: 1 file(s) left out' in out and 'lib_report.csv names each' in out
  # Every file of a class unreadable: the class would silently vanish.
  for name in os.listdir(library / 'electronic'):
    _corrupt(library / 'electronic' / name)
  with pytest.raises(UserError, match=r"class 'electronic': none of its 4 file\(s\) could be read"):
    folder.prepare(_config(library), str(tmp_path / 'w2'), clip)
  # Two of four unreadable: a split goes without the class.
  _library(library, per_class=4, styles=('electronic',))
  _corrupt(library / 'strings' / 'strings_1.wav')
  _corrupt(library / 'strings' / 'strings_2.wav')
  with pytest.raises(UserError, match=r"class 'strings' has no usable track for the \w+ split"):
    folder.prepare(_config(library), str(tmp_path / 'w3'), clip)


def test_main_prints_a_bad_folder_in_one_line(tmp_path):
  one = _library(tmp_path / 'one', per_class=3, styles=('metal',))
  done = _main(f'--config.data.folder={one}', f'--workdir={tmp_path / "w"}')
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      (f"error: {str(one)!r} has one class (metal): a classifier needs two or more; add a "
       'sub-folder of audio files for each other class')]
