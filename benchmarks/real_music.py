r"""Real music, little data: training recipes and fine-tuning on real recordings.

  python -m benchmarks.real_music                        # assemble, prepare, train, table
  python -m benchmarks.real_music --work=data/real_music --rows=2,5   # two of the rows
  python -m benchmarks.real_music --rows=5 --folds=4     # one row, 4-fold cross-validation

1. Assemble: ``apt-get download`` a few Debian game-soundtrack packages (no
   install), unpack them with ``dpkg-deb -x`` and pick whole tracks with a clear
   style into a manifest CSV (path, label, artist = source package or album:
   the split's group). The packages reserved for an independent evaluation
   (RESERVED) are refused by name. Styles the packages hold too few or too
   uncertain recordings of (jazz, rock, latin) are rendered from mma's groove
   library with fluidsynth (Debian's mma, fluidsynth and GM soundfonts), one
   group per groove family. A model can tell rendered from recorded audio by
   its sound, so with both kinds the task is closer to two smaller ones
   (recorded styles apart, rendered styles apart); ``--styles`` picks the set.
2. Prepare with ``python -m data_prep build`` twice, same tracks, same split
   (it is computed per track before windows are cut): ``rm_windows`` stores
   ``--windows`` 30-s windows spread over each track, ``rm_single`` one window
   at the track's centre.
3. Import the reference's genre checkpoint (``python -m crnn_jax.import_reference``).
4. Run every row with ``python main.py`` (the commands are printed and saved);
   rows trained on ``rm_single`` are then evaluated (``--mode=eval``) on
   ``rm_windows``, so every row is graded on the same test split, per clip and
   per track (mean of the window probabilities).
5. Print one table: clip and track top-1 (with a 95% interval), macro F1, wall time.

With ``--folds=K`` every chosen row runs K times instead, on a grouped K-fold
cross-validation of the same tracks: each style's groups (albums, packages,
groove families) are dealt into K folds; fold k is the test split, fold k+1 the
validation split and the rest train (the manifest's ``split`` column, built
with ``--split_by=source``). Every track is tested exactly once, so the table
gives each fold's clip top-1, their mean and spread, and track top-1 pooled
over all tracks: a figure that depends far less on which albums one split
happens to test. With ``--cv_validation=held_out`` run k trains on every fold
but k instead, one more group per style; one track of each training group is
held out as its validation split, which can then only monitor (it shares groups
with training), so every row keeps its last epoch.

Sizes are flags. The defaults (at most 12 tracks per style, 3 windows each)
keep the whole run near 40 minutes on 2 idle CPU cores; benchmarks/RESULTS.md
has the measured table and its exact command.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fnmatch
import glob
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import soundfile as sf
from scipy import stats

RESERVED = frozenset({
    'wesnoth-1.16-music', 'fretsonfire-songs-muldjord', 'fretsonfire-songs-sectoid',
    'marsshooter-data', 'nexuiz-music', 'singularity-music', 'pingus-data',
    'heroes-sound-tracks', 'ironseed-data', 'fb-music-high', 'openttd-openmsx',
    'wesnoth-music', 'nexuiz-data',  # depend on / belong to reserved ones
})
REFERENCE_CHECKPOINT = '../shared/reference/checkpoints/crnn_genre_model.pth'
# Head rows of the reference genre model a style starts from when fine-tuning
# (jazz and rock have the reference's own names).
CLASS_MAP = {'orchestral': 'classical', 'electronic': 'techno', 'rock_metal': 'metal'}
MIN_TRACK_SECONDS = 60.0
DEFAULT_STYLES = 'orchestral,electronic,jazz,rock,latin'
MIDI_PACKAGES = ('mma', 'fluidsynth', 'fluid-soundfont-gm', 'timgm6mb-soundfont')
SOUNDFONTS = ('/usr/share/sounds/sf2/FluidR3_GM.sf2', '/usr/share/sounds/sf2/TimGM6mb.sf2')
RENDER_SECONDS = 95  # three 30-s windows spread over each rendering
# What run k of a cross-validation validates on: 'fold', the groups of fold k+1
# (the rest train); 'held_out', one track of each training group of at least
# HOLD_OUT_MIN_GROUP tracks (every fold but k trains, and the rows keep their
# last epoch: validation then only monitors).
CV_VALIDATION = ('fold', 'held_out')
HOLD_OUT_MIN_GROUP = 3


@dataclasses.dataclass(frozen=True)
class Pick:
  """Tracks of one package that share a style; ``group`` keeps an album or
  composer of a package apart from its others (default: the package)."""
  label: str
  package: str
  globs: tuple[str, ...]
  group: str = ''
  exclude: tuple[str, ...] = ()
  confidence: str = 'medium'


_W = 'usr/share/games/widelands/data/music/'
_NAEV = 'usr/share/naev/dat/snd/music/'
_CLONK = 'usr/share/games/openclonk/Music.ocg/'
_WZ = 'usr/share/games/warzone2100/music/albums/'
# Styles from credits, composers' own tags and game conventions
# (/work/notes/real_music.md has the survey); the confidence says how sure.
PICKS = (
    Pick('orchestral', 'flare-game', ('usr/share/games/flare/mods/fantasycore/music/*.ogg',),
         exclude=('wind_ambient.ogg',), confidence='medium-high'),
    Pick('orchestral', 'widelands-data', (_W + 'ingame_*.ogg',),
         exclude=tuple(f'ingame_{i}.ogg' for i in ('00', 15, 16, 17, 23, 28))),
    Pick('orchestral', 'freecol', ('usr/share/games/freecol/default/resources/music/default/*.ogg',),
         exclude=('musicbox.ogg',), confidence='medium-high'),
    Pick('orchestral', 'unknown-horizons', ('usr/share/unknown-horizons/content/audio/music/*.ogg',),
         exclude=('irelands_coast.ogg',), confidence='medium-high'),
    Pick('electronic', 'warzone2100-music', (_WZ + 'original_soundtrack/*.opus',),
         group='warzone2100-music:severn'),
    Pick('electronic', 'warzone2100-music', (_WZ + 'legacy_soundtrack/*.opus',
                                             _WZ + 'aftermath_soundtrack/*.opus'),
         group='warzone2100-music:lupusmechanicus', exclude=('*_enhanced.opus',)),
    Pick('electronic', 'blobwars-data', ('usr/share/games/blobwars/music/*',), exclude=('*.tags',)),
    Pick('electronic', 'starfighter-data', tuple(
        'usr/share/starfighter/music/' + f for f in (
            'through_space.ogg', 'sound_and_silence.ogg', 'last_cyber_dance.ogg',
            'walking_among_androids.ogg', 'railjet_short.ogg', 'space_dimensions.ogg', 'RE.ogg'))),
    Pick('electronic', 'naev-data', tuple(_NAEV + f for f in (
        'terminal.ogg', 'eureka.ogg', 'combat1.ogg', 'combat3.ogg', 'sirius2.ogg', 'dvaered1.ogg',
        'dvaered2.ogg')), group='naev-data:askyel'),
    Pick('rock_metal', 'widelands-data', tuple(_W + f'ingame_{i}.ogg' for i in (15, 16, 17)),
         group='widelands-data:middlefinger', confidence='high (tagged thrash metal)'),
    Pick('rock_metal', 'openclonk-data', (_CLONK + 'Motorway.ogg', _CLONK + 'TheSkylands.ogg'),
         confidence='high (tagged rock)'),
    Pick('rock_metal', 'redeclipse-data', ('usr/share/games/redeclipse/data/sounds/music/track_*.ogg',),
         confidence='low (style not stated; loud, dense guitars)'),
    Pick('ambient', 'naev-data', (_NAEV + 'ambiphonic.ogg', _NAEV + 'void_sensor.ogg'),
         group='naev-data:zeropage', confidence='medium-high'),
    Pick('ambient', 'naev-data', tuple(_NAEV + f'ambient{k}.ogg' for k in ('1', '2', '2_5', '3')),
         group='naev-data:whallon'),
    Pick('ambient', 'openclonk-data', (_CLONK + 'LucidDream.ogg',), confidence='high (tagged)'),
    Pick('ambient', 'freeorion-data',
         ('usr/share/games/freeorion/default/data/sound/artificial_intelligence_v3.ogg',),
         confidence='medium-low'),
)



@dataclasses.dataclass(frozen=True)
class MidiStyle:
  """Grooves of mma's library by family (the split's groups), chord
  progressions and a tempo range."""
  families: dict[str, tuple[str, ...]]
  progressions: tuple[tuple[str, ...], ...]
  tempo: tuple[int, int]


MIDI_STYLES = {
    'jazz': MidiStyle(
        {'swing': ('Swing', 'SwingWalk'), 'bigband': ('BigBand', 'BigBand1'),
         'jazzcombo': ('JazzCombo', 'JazzCombo1'), 'fastswing': ('FastSwing', 'FastSwingWalk'),
         'slowjazz': ('SlowJazz', 'SlowJazz1')},
        (('Dm7', 'G7', 'Cmaj7', 'A7'), ('Cmaj7', 'A7', 'Dm7', 'G7'),
         ('Fmaj7', 'Bb7', 'Em7', 'A7', 'Dm7', 'G7', 'Cmaj7', 'Cmaj7')), (100, 190)),
    'rock': MidiStyle(
        {'50srock': ('50sRock', '50sRock1'), '60srock': ('60sRock', '60sRock1'),
         'rock-128': ('Rock128', 'Rock128Plain'), 'softrock': ('SoftRock', 'SoftRock1'),
         '8beat': ('8Beat', '8Beat1')},
        (('C', 'C', 'F', 'F', 'C', 'C', 'G', 'F'), ('Am', 'F', 'C', 'G'), ('E', 'A', 'B', 'A'),
         ('C', 'Bb', 'F', 'C')), (100, 160)),
    'latin': MidiStyle(
        {'bossanova': ('BossaNova',), 'samba': ('Samba',), 'salsa': ('Salsa',),
         'mambo': ('Mambo', 'Mambo1'), 'chacha': ('ChaCha', 'ChaCha1'), 'rhumba': ('Rhumba',),
         'beguine': ('Beguine', 'Beguine1'), 'merengue': ('Merengue', 'Merengue1')},
        (('Dm7', 'G7', 'Cmaj7', 'Cmaj7'), ('Am7', 'D7', 'Gmaj7', 'Cmaj7'),
         ('Cm7', 'F7', 'Bbmaj7', 'Ebmaj7')), (96, 150)),
}


# --------------------------------------------------------------------------
# 1. Assemble the labelled library
# --------------------------------------------------------------------------
def package_root(package: str, debs_dir: str, extract_dir: str) -> str:
  """The unpacked package, downloaded (apt-get download) and unpacked once."""
  if package in RESERVED:
    raise SystemExit(f'{package} is reserved for an independent evaluation: not used')
  root = os.path.join(extract_dir, package)
  if os.path.isdir(os.path.join(root, 'usr')):
    return root
  os.makedirs(debs_dir, exist_ok=True)
  debs = sorted(glob.glob(os.path.join(debs_dir, f'{package}_*.deb')))
  if not debs:
    subprocess.run(['apt-get', 'download', package], cwd=debs_dir, check=True,
                   capture_output=True)
    debs = sorted(glob.glob(os.path.join(debs_dir, f'{package}_*.deb')))
  os.makedirs(root, exist_ok=True)
  subprocess.run(['dpkg-deb', '-x', debs[-1], root], check=True)
  return root


def pick_files(pick: Pick, root: str) -> list[str]:
  found = sorted({p for g in pick.globs for p in glob.glob(os.path.join(root, g))
                  if os.path.isfile(p)})
  found = [p for p in found if not any(fnmatch.fnmatch(os.path.basename(p), e)
                                       for e in pick.exclude)]
  return [p for p in found if sf.info(p).duration >= MIN_TRACK_SECONDS]


def choose_tracks(candidates: dict[str, dict[str, list[str]]], per_style: int, seed: int
                  ) -> list[tuple[str, str, str]]:
  """(path, style, group): at most ``per_style`` tracks per style, taken in
  turn from its groups (seeded order), so no single album dominates."""
  rng = random.Random(seed)
  chosen = []
  for style in sorted(candidates):
    groups = {g: sorted(paths) for g, paths in sorted(candidates[style].items())}
    for paths in groups.values():
      rng.shuffle(paths)
    taken = 0
    while taken < per_style and any(groups.values()):
      for group, paths in groups.items():
        if paths and taken < per_style:
          chosen.append((paths.pop(), style, group))
          taken += 1
  return chosen


def recorded_candidates(styles: Sequence[str], args: argparse.Namespace
                        ) -> dict[str, dict[str, list[str]]]:
  """style -> group -> track paths, from the packages' picks."""
  debs_dir = args.debs_dir or os.path.join(args.work, 'debs')
  extract_dir = os.path.join(args.work, 'packages')
  candidates: dict[str, dict[str, list[str]]] = {s: {} for s in styles if s not in MIDI_STYLES}
  picks = [p for p in PICKS if p.label in candidates]
  if picks:
    subprocess.run(['apt-get', 'update', '-qq'], check=False, capture_output=True)
  for pick in picks:
    root = package_root(pick.package, debs_dir, extract_dir)
    candidates[pick.label].setdefault(pick.group or pick.package, []).extend(
        pick_files(pick, root))
  return candidates


def render_midi_styles(styles: Sequence[str], args: argparse.Namespace
                       ) -> list[tuple[str, str, str]]:
  """(path, style, group) of ``tracks_per_style`` renderings per mma style:
  grooves of each family in turn, seeded tempo, key, chords and soundfont."""
  wanted = [s for s in styles if s in MIDI_STYLES]
  if not wanted:
    return []
  if not (shutil.which('mma') and shutil.which('fluidsynth') and os.path.exists(SOUNDFONTS[0])):
    subprocess.run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', *MIDI_PACKAGES],
                   check=True, capture_output=True)
  fonts = [f for f in SOUNDFONTS if os.path.exists(f)]
  rng = random.Random(args.seed)
  out = []
  for style in wanted:
    spec = MIDI_STYLES[style]
    rounds = -(-args.tracks_per_style // len(spec.families))
    grooves = [(family, gs[k % len(gs)]) for k in range(rounds)
               for family, gs in spec.families.items()][:args.tracks_per_style]
    for i, (family, groove) in enumerate(grooves):
      settings = (rng.randint(*spec.tempo), rng.randint(-5, 6), rng.choice(spec.progressions),
                  fonts[i % len(fonts)])
      path = os.path.join(args.work, 'midi', style, f'{groove}_{i:02d}.wav')
      if not os.path.exists(path):  # rendered once; the settings are drawn either way
        render(groove, *settings, path)
      out.append((path, style, f'mma:{family}'))
  return out


def render(groove: str, tempo: int, transpose: int, chords: Sequence[str], font: str,
           path: str) -> None:
  """One mma groove -> MIDI -> a 22,050 Hz WAV of about RENDER_SECONDS."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  stem = os.path.splitext(path)[0]
  bars = int(RENDER_SECONDS * tempo / 60 / 4) + 1
  lines = [f'Tempo {tempo}', f'Transpose {transpose}', f'Groove {groove}']
  lines += [f'{b + 1} {chords[b % len(chords)]}' for b in range(bars)]
  with open(stem + '.mma', 'w') as f:
    f.write('\n'.join(lines) + '\n')
  subprocess.run(['mma', '-f', stem + '.mid', stem + '.mma'], check=True, capture_output=True)
  subprocess.run(['fluidsynth', '-ni', '-q', '-F', path + '.tmp.wav', '-r', '22050', '-g', '0.6',
                  font, stem + '.mid'], check=True, capture_output=True)
  os.replace(path + '.tmp.wav', path)


def assemble(args: argparse.Namespace) -> str:
  """Writes ``work/library/manifest.csv`` (and links named with an audio
  extension); returns the manifest's path."""
  library = os.path.join(args.work, 'library')
  shutil.rmtree(library, ignore_errors=True)
  styles = styles_of(args)
  chosen = choose_tracks(recorded_candidates(styles, args), args.tracks_per_style, args.seed)
  chosen += render_midi_styles(styles, args)
  manifest = os.path.join(library, 'manifest.csv')
  os.makedirs(library)
  with open(manifest, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['path', 'label', 'artist', 'track_id'])
    for path, style, group in chosen:
      name = os.path.basename(path)
      if not os.path.splitext(name)[1]:  # blobwars' Ogg files have no extension
        name += '.ogg'
      link = os.path.join(library, style, f'{group.replace(":", "_")}__{name}')
      os.makedirs(os.path.dirname(link), exist_ok=True)
      os.symlink(os.path.abspath(path), link)
      w.writerow([os.path.relpath(link, library), style, group,
                  f'{group}/{os.path.splitext(name)[0]}'])
  return manifest


def styles_of(args: argparse.Namespace) -> list[str]:
  styles = sorted({s.strip() for s in args.styles.split(',') if s.strip()})
  known = {p.label for p in PICKS} | set(MIDI_STYLES)
  unknown = [s for s in styles if s not in known]
  if unknown or len(styles) < 2:
    raise SystemExit(f'--styles {args.styles!r}: choose two or more of {sorted(known)}')
  return styles


# --------------------------------------------------------------------------
# 2-4. Prepare, import, train and evaluate: the commands of the table
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  data: str  # the data set it trains on: 'rm_windows' or 'rm_single'
  config: str
  flags: tuple[str, ...] = ()


EVAL_BATCH = 16  # memory, not results: evaluation does not depend on it
NO_AUGMENT = ('--config.augment.time_shift=0', '--config.augment.freq_masks=0',
              '--config.augment.time_masks=0', '--config.augment.mixup_alpha=0')

MEAN_READOUT = ('--config.model.readout=mean',)


def rows(args: argparse.Namespace, reference_workdir: str) -> list[Row]:
  class_map = ','.join(f'{k}={v}' for k, v in CLASS_MAP.items() if k in styles_of(args))
  init = (f'--config.init_from={reference_workdir}', f'--config.finetune.class_map={class_map}')
  small = (f'--config.train.num_epochs={args.epochs}',)
  return [
      # Batch 64 as 4 passes of 16 (same updates and schedule; batch norm sees 16
      # clips at a time): one pass of 64 full-length clips needs ~10 GB.
      Row('reference recipe, from scratch', 'rm_windows', 'configs/default.py',
          ('--config.train.grad_accum_steps=4',)),
      Row('small-data recipe, from scratch', 'rm_windows', 'configs/small_data.py', small),
      Row('small-data recipe, from scratch, 1 window, no augmentation', 'rm_single',
          'configs/small_data.py', small + NO_AUGMENT),
      Row('linear probe on the reference genre model', 'rm_windows', 'configs/finetune.py',
          small + init + ('--config.finetune.trainable=head',)),
      Row('fine-tune the reference genre model', 'rm_windows', 'configs/finetune.py', init),
      Row('fine-tune the reference genre model, 1 window, no augmentation', 'rm_single',
          'configs/finetune.py', init + NO_AUGMENT),
      # The flatten head weighs each of the 20 GRU steps apart; a mean readout
      # (its head started from the flatten head's per-step weights, summed)
      # reads them alike, with 20x fewer head weights, and allows time shifts.
      Row('fine-tune the reference genre model, mean readout', 'rm_windows',
          'configs/finetune.py', init + MEAN_READOUT + ('--config.augment.time_shift=0.5',)),
      Row('fine-tune the reference genre model, mean readout, 1 window, no augmentation',
          'rm_single', 'configs/finetune.py', init + MEAN_READOUT + NO_AUGMENT),
      # Batch norm on the reference's running statistics (from 25,000 tracks)
      # instead of batches of 8 clips: recomputing them on the small set's
      # training clips cost 0.13 validation top-1 on the 120-track set.
      Row('fine-tune the reference genre model, 1 window, no augmentation, batch norm frozen',
          'rm_single', 'configs/finetune.py',
          init + NO_AUGMENT + ('--config.finetune.batch_norm=frozen',)),
  ]


def run(command: list[str], log_path: str) -> float:
  """Runs a command (output to a log), raises if it fails; returns its wall time."""
  print('$ ' + ' '.join(command), flush=True)
  t0 = time.time()
  with open(log_path, 'a') as log:
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
  if done.returncode:
    raise SystemExit(f'failed ({done.returncode}): see {log_path}')
  return time.time() - t0


def data_sets(args: argparse.Namespace) -> dict[str, str]:
  """The benchmark's data sets and the windows each stores per track."""
  return {'rm_windows': str(args.windows), 'rm_single': '1'}


def build_command(manifest: str, data_dir: str, name: str, windows: str,
                  split: Sequence[str]) -> list[str]:
  return [sys.executable, '-m', 'data_prep', 'build', f'--input={manifest}',
          f'--data_dir={data_dir}', f'--name={name}', '--clip_position=center',
          f'--windows={windows}', *split, '--no_progress']


def prepare(args: argparse.Namespace, manifest: str, log: str) -> dict[str, list[str]]:
  """The two data sets and the imported reference model; their commands."""
  data_dir = os.path.join(args.work, 'tfds')
  commands = {}
  for name, windows in data_sets(args).items():
    commands[name] = build_command(manifest, data_dir, name, windows, [f'--split={args.split}'])
    run(commands[name], log)
  commands.update(import_reference(args, log))
  return commands


def import_reference(args: argparse.Namespace, log: str) -> dict[str, list[str]]:
  """The reference genre model as a crnn_jax workdir (once per ``--work``)."""
  reference = os.path.join(args.work, 'reference_genres')
  if os.path.isdir(os.path.join(reference, 'checkpoints')):
    return {}
  command = [sys.executable, '-m', 'crnn_jax.import_reference', '--config=configs/genres.py',
             f'--checkpoint={args.checkpoint}', f'--workdir={reference}']
  run(command, log)
  return {'import': command}


def train_row(row: Row, data_dir: str, runs_dir: str, log: str,
              extra: Sequence[str] = ()) -> dict:
  """Trains (and, from rm_single, evaluates on rm_windows) with ``extra``
  flags after the row's own; its results."""
  workdir = os.path.join(runs_dir, row.name.replace(' ', '_').replace(',', ''))
  shutil.rmtree(workdir, ignore_errors=True)  # a fresh run, not a resumed one
  base = [sys.executable, 'main.py', f'--config={row.config}', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', f'--config.train.eval_batch_size={EVAL_BATCH}',
          *row.flags, *extra]
  commands = [base + [f'--config.data.name={row.data}']]
  if row.data != 'rm_windows':
    commands.append(base + ['--config.data.name=rm_windows', '--mode=eval'])
  seconds = run(commands[0], log)  # the table's wall time: training and its evaluation
  for command in commands[1:]:
    run(command, log)
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  return {'row': row.name, 'commands': [' '.join(c[1:]) for c in commands],
          'seconds': seconds, 'test': results['test'], 'checkpoint': results['checkpoint']}


# --------------------------------------------------------------------------
# Cross-validation (--folds): the same rows on K album-disjoint test splits
# --------------------------------------------------------------------------
def group_folds(tracks: Sequence[tuple[str, str]], folds: int, seed: int) -> dict[str, int]:
  """(style, group) per track -> each group's fold; a group (album, package,
  groove family) is never split, even where it holds two styles. Each style's
  groups are dealt largest first to the fold holding the fewest of that style's
  tracks (ties: fewest tracks overall), so every fold tests every style."""
  sizes: dict[str, dict[str, int]] = {}
  for style, group in tracks:
    sizes.setdefault(style, {}).setdefault(group, 0)
    sizes[style][group] += 1
  few = {s: len(g) for s, g in sizes.items() if len(g) < folds}
  if few:
    raise SystemExit(f'--folds={folds}: every style needs as many groups (albums, packages, '
                     f'groove families); too few in {few}: use fewer folds')
  rng = random.Random(seed)
  fold_of: dict[str, int] = {}
  held = {s: [0] * folds for s in sizes}
  total = [0] * folds
  for style in sorted(sizes):
    groups = sorted(g for g in sizes[style] if g not in fold_of)
    rng.shuffle(groups)  # seeded order among groups of one size
    for group in sorted(groups, key=lambda g: -sizes[style][g]):
      k = min(range(folds), key=lambda f: (held[style][f], total[f]))
      fold_of[group] = k
      for s, style_sizes in sizes.items():  # a shared group counts for each of its styles
        held[s][k] += style_sizes.get(group, 0)
        total[k] += style_sizes.get(group, 0)
  missing = {s: [k for k in range(folds) if not held[s][k]] for s in sizes}
  missing = {s: empty for s, empty in missing.items() if empty}
  if missing:
    raise SystemExit(f'--folds={folds}: groups shared between styles leave folds {missing} '
                     'without a test track of that style: use fewer folds')
  return fold_of


def fold_manifests(manifest: str, folds: int, seed: int, validation: str = 'fold') -> list[str]:
  """One manifest per fold beside ``manifest``, with its ``split`` column:
  run k tests on fold k; ``validation`` (CV_VALIDATION) says what it validates on."""
  with open(manifest, newline='') as f:
    tracks = list(csv.DictReader(f))
  fold_of = group_folds([(t['label'], t['artist']) for t in tracks], folds, seed)
  held = held_out_tracks(tracks, seed) if validation == 'held_out' else set()
  paths = []
  for k in range(folds):
    path = os.path.join(os.path.dirname(manifest), f'manifest_fold{k}.csv')
    with open(path, 'w', newline='') as f:
      w = csv.DictWriter(f, [*tracks[0], 'split'])
      w.writeheader()
      w.writerows({**t, 'split': fold_split(fold_of[t['artist']], k, folds,
                                            t['track_id'] in held, validation)} for t in tracks)
    paths.append(path)
  return paths


def fold_split(fold: int, k: int, folds: int, held_out: bool, validation: str) -> str:
  """The split, in run k, of a track of fold ``fold`` (``held_out``: chosen
  by held_out_tracks)."""
  if fold == k:
    return 'test'
  if validation == 'fold':
    return 'validation' if fold == (k + 1) % folds else 'train'
  return 'validation' if held_out else 'train'


def held_out_tracks(tracks: Sequence[dict[str, str]], seed: int) -> set[str]:
  """One track of each group of HOLD_OUT_MIN_GROUP or more (seeded): the
  validation split of ``--cv_validation=held_out``, wherever its group trains."""
  members: dict[str, list[str]] = {}
  for t in tracks:
    members.setdefault(t['artist'], []).append(t['track_id'])
  rng = random.Random(seed)
  return {rng.choice(sorted(ids)) for _, ids in sorted(members.items())
          if len(ids) >= HOLD_OUT_MIN_GROUP}


def fold_setup(manifest: str, folds: int, seed: int, validation: str = 'fold') -> str:
  """Names one cross-validation (its tracks, K, seed and validation), so
  results of another are never pooled with this one's."""
  with open(manifest, 'rb') as f:
    setup = f'{hashlib.sha256(f.read()).hexdigest()[:12]}-k{folds}-s{seed}'
  return setup if validation == 'fold' else f'{setup}-{validation}'


def run_folds(args: argparse.Namespace, manifest: str, chosen: Sequence[Row],
              order: Sequence[str], log: str) -> list[dict]:
  """Every chosen row on every fold, each fold's results merged into
  ``work/folds/results.json`` as it ends; this cross-validation's results."""
  names = {'rm_windows'} | {row.data for row in chosen}
  windows = data_sets(args)
  setup = fold_setup(manifest, args.folds, args.seed, args.cv_validation)
  # Validation from the training groups only monitors: every row keeps its last epoch.
  keep_last = ('--config.eval.checkpoint=latest',) if args.cv_validation == 'held_out' else ()
  path = os.path.join(args.work, 'folds', 'results.json')
  results: list[dict] = []
  for k, fold_manifest in enumerate(
      fold_manifests(manifest, args.folds, args.seed, args.cv_validation)):
    fold_dir = os.path.join(args.work, 'folds', f'fold{k}')
    decoded_by = os.path.join(args.work, 'tfds' if k == 0 else 'folds/fold0/tfds')
    for name in sorted(names):
      share_cache(os.path.join(decoded_by, f'{name}_cache'),
                  os.path.join(fold_dir, 'tfds', f'{name}_cache'))
      run(build_command(fold_manifest, os.path.join(fold_dir, 'tfds'), name, windows[name],
                        ['--split_by=source']), log)
    fresh = [dict(train_row(row, os.path.join(fold_dir, 'tfds'), os.path.join(fold_dir, 'runs'),
                            log, keep_last), fold=k, setup=setup) for row in chosen]
    results = merge_results(path, fresh, order, key=('row', 'fold', 'setup'))
  return [r for r in results if r.get('setup') == setup]


def share_cache(source: str, target: str) -> None:
  """Links decoded clips (the single-split build's, or the first fold's) into
  a fold's cache, so the folds decode nothing twice: the files are named by
  their content and replaced, never rewritten, by the build. Copies where the
  file system has no hard links."""
  if os.path.isdir(source) and not os.path.exists(target):
    try:
      shutil.copytree(source, target, copy_function=os.link)
    except (OSError, shutil.Error):
      shutil.rmtree(target, ignore_errors=True)
      shutil.copytree(source, target)


# --------------------------------------------------------------------------
# 5. The table
# --------------------------------------------------------------------------
def table(results: Sequence[dict], chance: float) -> str:
  head = ('| row | clip top-1 | track top-1 (95% interval) | clip macro F1 | track macro F1 | '
          'checkpoint | wall s |')
  lines = [head, '|' + '---|' * 7]
  for r in results:
    clip, track = r['test'], r['test']['track']
    chosen = r['checkpoint']
    which = f"{chosen.get('checkpoint', '')} (epoch {chosen.get('epoch', '?')})"
    low, high = track_interval(track)
    lines.append(f"| {r['row']} | {clip['top1']:.3f} | "
                 f"{track['top1']:.3f} ({low:.3f}-{high:.3f}) | {clip['macro']['f1']:.3f} | "
                 f"{track['macro']['f1']:.3f} | {which} | {r['seconds']:.0f} |")
  first = results[0]['test']
  lines.append(f"\ntest split: {first['count']} clips of {first['track']['count']} tracks, "
               f'{len(first["class_names"])} styles; chance (uniform) {chance:.3f}, majority '
               f'class {_majority(first):.3f} of the clips. Intervals: Wilson, each track an '
               'independent draw; tracks of one album are not, so they are too narrow')
  return '\n'.join(lines)


def track_interval(track: dict) -> tuple[float, float]:
  """95% Wilson score interval of track top-1: how far the figure could move
  with another draw of as many test tracks."""
  return wilson(tracks_right(track), int(track['count']))


def tracks_right(track: dict) -> int:
  """Tracks named right, from a track-level result's top-1 and count."""
  return round(track['top1'] * int(track['count']))


def wilson(right: int, n: int) -> tuple[float, float]:
  ci = stats.binomtest(right, n).proportion_ci(0.95, method='wilson')
  return float(ci.low), float(ci.high)


def _majority(test: dict) -> float:
  supports = [v['support'] for v in test['per_class'].values()]
  return max(supports) / max(sum(supports), 1)


def cv_table(results: Sequence[dict], chance: float) -> str:
  """One line per row over its folds: each fold's clip top-1, their mean and
  standard deviation, track top-1 pooled over every tested track (each is
  tested once) with its Wilson interval, mean macro F1s, total wall time."""
  head = ('| row | clip top-1 per fold | clip top-1 mean (sd) | track top-1, all tracks '
          '(95% interval) | clip macro F1 mean | track macro F1 mean | wall s |')
  lines = [head, '|' + '---|' * 7]
  names = list(dict.fromkeys(r['row'] for r in results))
  for name in names:
    runs = [r for r in results if r['row'] == name]
    clip = np.array([r['test']['top1'] for r in runs])
    right = sum(tracks_right(r['test']['track']) for r in runs)
    tracks = sum(int(r['test']['track']['count']) for r in runs)
    low, high = wilson(right, tracks)
    folds = ' '.join(f"{c:.3f}" for c in clip)
    lines.append(
        f'| {name} | {folds} | {clip.mean():.3f} ({clip.std(ddof=1) if len(clip) > 1 else 0:.3f})'
        f' | {right / tracks:.3f} ({low:.3f}-{high:.3f}) | '
        f"{np.mean([r['test']['macro']['f1'] for r in runs]):.3f} | "
        f"{np.mean([r['test']['track']['macro']['f1'] for r in runs]):.3f} | "
        f"{sum(r['seconds'] for r in runs):.0f} |")
  counts = [f"{r['test']['count']}/{r['test']['track']['count']}" for r in results
            if r['row'] == names[0]]
  lines.append(f"\nfolds' test clips/tracks: {' '.join(counts)}; chance (uniform) "
               f'{chance:.3f}. Intervals: Wilson over all tested tracks, each an independent '
               'draw; tracks of one album are not, so they are too narrow')
  return '\n'.join(lines)


def merge_results(path: str, fresh: Sequence[dict], order: Sequence[str],
                  key: Sequence[str] = ('row',)) -> list[dict]:
  """Writes ``fresh`` rows into the results file over any earlier run of the
  same rows (``--rows`` reruns some; with folds, the same row and fold), in the
  table's order; returns them all."""
  def ident(r: dict) -> tuple:
    return tuple(r.get(k) for k in key)
  try:
    with open(path) as f:
      kept = {ident(r): r for r in json.load(f)}
  except (OSError, ValueError):
    kept = {}
  kept.update({ident(r): r for r in fresh})
  rank = {name: i for i, name in enumerate(order)}
  results = sorted((r for r in kept.values() if r['row'] in rank),
                   key=lambda r: (rank[r['row']], r.get('fold', 0)))
  with open(path, 'w') as f:
    json.dump(results, f, indent=2)
  return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--work', default='data/real_music', help='everything is written here')
  p.add_argument('--debs_dir', default='', help='.deb files already downloaded (default: '
                 'WORK/debs, filled with apt-get download)')
  p.add_argument('--checkpoint', default=REFERENCE_CHECKPOINT)
  p.add_argument('--styles', default=DEFAULT_STYLES, help='recorded: orchestral, electronic, '
                 'rock_metal, ambient; rendered from mma grooves: jazz, rock, latin')
  p.add_argument('--tracks_per_style', type=int, default=12)
  p.add_argument('--windows', type=int, default=3, help='30-s windows per track (rm_windows)')
  p.add_argument('--split', default='0.55,0.15,0.30', help='train,validation,test fractions')
  p.add_argument('--epochs', type=int, default=12, help='small-data recipe and linear probe '
                 '(fine-tuning: configs/finetune.py, 8)')
  p.add_argument('--rows', default='', help='comma-separated row numbers (1-based) to run')
  p.add_argument('--seed', type=int, default=0, help='which tracks are chosen (and, with '
                 '--folds, how groups are dealt)')
  p.add_argument('--folds', type=int, default=0, help='K >= 3: grouped K-fold cross-validation '
                 'of the chosen rows instead of one split (0: one split, --split)')
  p.add_argument('--cv_validation', choices=CV_VALIDATION, default='fold',
                 help="with --folds, what run k validates on: 'fold', fold k+1 (its best epoch "
                 "is kept); 'held_out', one track of each training group, every other fold "
                 'trains, the last epoch is kept')
  args = p.parse_args(argv)
  if args.cv_validation != 'fold' and not args.folds:
    p.error(f'--cv_validation={args.cv_validation} needs --folds=K (one split: --split)')
  if args.folds and args.folds < 3:
    p.error(f'--folds={args.folds}: cross-validation needs 3 or more folds (test, validation '
            'and training each take one or more); 0 runs one split')
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  os.makedirs(args.work, exist_ok=True)
  log = os.path.join(args.work, 'log.txt')
  t0 = time.time()
  manifest = assemble(args)
  reference = os.path.abspath(os.path.join(args.work, 'reference_genres'))
  chosen = rows(args, reference)
  if args.rows:
    chosen = [chosen[int(i) - 1] for i in args.rows.split(',')]
  chance = 1 / len(styles_of(args))
  if args.folds:
    import_reference(args, log)
    order = [row.name for row in rows(args, reference)]
    print(cv_table(run_folds(args, manifest, chosen, order, log), chance))
    where = os.path.join(args.work, 'folds', 'results.json')
  else:
    prepare(args, manifest, log)
    data_dir, runs_dir = os.path.join(args.work, 'tfds'), os.path.join(args.work, 'runs')
    results = merge_results(os.path.join(args.work, 'results.json'),
                            [train_row(row, data_dir, runs_dir, log) for row in chosen],
                            [row.name for row in rows(args, reference)])
    print(table(results, chance))
    where = os.path.join(args.work, 'results.json')
  print(f'\ntotal {time.time() - t0:.0f} s; commands and results in {where}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
