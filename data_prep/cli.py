"""Argument parsing for ``python -m data_prep``; one function per command.

Errors the user can fix (a missing folder, a bad name, bad fractions) print as
one line and exit 2, not as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from crnn_jax.core import audio, labels, storage
from crnn_jax.core.errors import UserError
from data_prep import build, match
from data_prep.musicbrainz import command as musicbrainz_command
from data_prep.spotify import command as spotify_command


def _fractions(text: str) -> tuple[float, float, float]:
  try:
    parts = tuple(float(x) for x in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected three numbers like 0.64,0.16,0.20, got {text!r}'
                                     ) from None
  if len(parts) != 3:
    raise argparse.ArgumentTypeError(f'expected three fractions (train,validation,test), got {text!r}')
  return parts  # type: ignore[return-value]


def add_build_command(commands: Any) -> None:
  p = commands.add_parser(
      'build', help='prepare a TFDS data set from a folder or manifest CSV',
      description='Prepare a TFDS ArrayRecord data set that `python main.py '
      '--config.data.name=NAME --config.data.data_dir=DIR` trains on. Resumable: rerun the '
      'same command after a crash or Ctrl-C. Skipped inputs are listed in DIR/NAME_report.csv.')
  p.add_argument('--input', required=True,
                 help='library folder (one sub-folder per label: mp3/ogg/flac/wav), manifest CSV '
                 '(or TSV), or with --preset=mtg_jamendo an MTG-Jamendo split folder')
  p.add_argument('--data_dir', required=True, help='output folder (holds NAME/, NAME_cache/, '
                 'NAME_report.csv)')
  p.add_argument('--name', required=True, help='data set name, snake_case')
  p.add_argument('--clip_seconds', type=float, default=30.0, help='clip length (default 30)')
  p.add_argument('--clip_position', choices=('start', 'center'), default='start',
                 help="'start': the first seconds (previews, as the reference); 'center': the "
                 'middle of a longer track')
  p.add_argument('--windows', default='1',
                 help="30-s windows stored per track: 1 (default: one, at --clip_position), "
                 "'all' (every non-overlapping window) or N (N spread over the track); a "
                 "track's windows stay in one split, and evaluation also scores whole tracks")
  p.add_argument('--min_seconds', type=float, default=5.0,
                 help='shorter clips are skipped, longer ones zero-padded (default 5)')
  p.add_argument('--split', type=_fractions, default=(0.64, 0.16, 0.20),
                 help='train,validation,test fractions (default 0.64,0.16,0.20)')
  p.add_argument('--split_by', choices=('artist', 'track', 'reference', 'source'),
                 default='artist',
                 help="'artist': stratified by label, no artist in two splits (default); "
                 "'track': stratified per track; 'reference': the reference's per-track random "
                 "split; 'source': the source's own split (a manifest's split column, FMA's "
                 'set.split, an MTG-Jamendo split folder)')
  p.add_argument('--seed', type=int, default=42)
  p.add_argument('--workers', type=int, default=0, help='decoding processes (0: all cores)')
  p.add_argument('--classes', default='', help='comma-separated class names in index order '
                 '(default: every label found, sorted); other labels are reported')
  p.add_argument('--label_map', default='', help='JSON file: raw label -> class name or null '
                 "(drop); or 'metal' for the reference's 32 -> 20 subgenre mapping")
  p.add_argument('--tabular', choices=('auto', 'none', 'source', 'audio'), default='auto',
                 help="'none': audio only; 'source': the manifest's tabular columns; 'audio': "
                 "the reference's 16 columns, computed from audio where the source lacks them; "
                 "'auto': 'source' if the manifest has tabular columns, else 'none'")
  p.add_argument('--preset', default='', help="manifest column mapping: 'metal_track_data' "
                 "(the reference's CSV), 'fma' (FMA tracks.csv), 'mtg_jamendo' (a genre TSV or "
                 'a split folder), or empty for generic columns '
                 '(path,label[,labels,artist,track_id,<tabular columns>])')
  p.add_argument('--audio_root', default='', help='folder that manifest audio paths are '
                 'relative to (default: the CSV\'s folder)')
  p.add_argument('--echonest', default='', help="FMA echonest.csv (with --preset=fma): "
                 'Echo Nest audio features as tabular columns')
  p.add_argument('--fma_subset', choices=('', 'small', 'medium', 'large', 'full'), default='',
                 help='with --preset=fma: keep only this FMA subset\'s tracks')
  p.add_argument('--beam_runner', default='', help="decode and write through Apache Beam "
                 "(pip install apache-beam): 'DirectRunner' locally, or a cluster's runner "
                 '(results flow as pipeline elements; --data_dir and the audio may be remote, '
                 'e.g. gs://, and must be reachable by the workers)')
  p.add_argument('--beam_options', default='', help='extra Beam pipeline options, '
                 "space-separated, e.g. '--direct_num_workers=4 --direct_running_mode=multi_processing'")
  p.add_argument('--no_progress', action='store_true', help='no progress bar')
  p.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> int:
  label_map = None
  try:
    if args.label_map == 'metal':
      label_map = dict(labels.METAL_LABEL_MAP)
    elif args.label_map:
      with open(args.label_map, encoding='utf-8') as f:
        label_map = json.load(f)
    manifest_options: dict[str, Any] = {}
    if args.preset:
      manifest_options['preset'] = args.preset
    if args.audio_root:
      manifest_options['audio_root'] = args.audio_root
    if args.echonest:
      manifest_options['echonest'] = args.echonest
    if args.fma_subset:
      manifest_options['subset'] = args.fma_subset
    build.build_dataset(
        args.input, args.data_dir, args.name,
        clip=audio.ClipSettings(seconds=args.clip_seconds, position=args.clip_position,
                                min_seconds=args.min_seconds), windows=args.windows,
        split=args.split, group_by_artist=args.split_by == 'artist',
        stratify=args.split_by != 'reference', source_split=args.split_by == 'source',
        seed=args.seed, workers=args.workers or None,
        class_names=[c.strip() for c in args.classes.split(',') if c.strip()] or None,
        label_map=label_map, tabular=args.tabular, manifest_options=manifest_options,
        progress=not args.no_progress, **_beam_settings(args))
  except (ValueError, OSError, UserError) as e:  # a held lock, a full disk: one line
    code = storage.storage_errno(e)
    if code is not None and not isinstance(e, storage.StorageError):
      e = storage.StorageError(code, os.strerror(code), getattr(e, 'filename', None) or args.data_dir)
    print(f'error: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print('interrupted: rerun the same command to continue (finished clips are cached)',
          file=sys.stderr)
    return 130
  except RuntimeError as e:  # unexpected (e.g. a broken process pool): one line, no traceback
    print(f'error: {type(e).__name__}: {e}; rerun the same command to continue (finished clips '
          'are cached)', file=sys.stderr)
    return 1
  return 0


def _beam_settings(args: argparse.Namespace) -> dict[str, Any]:
  if not (args.beam_runner or args.beam_options):
    return {}
  try:
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError('--beam_runner needs Apache Beam: pip install apache-beam') from None
  return {'beam_runner': args.beam_runner or None,
          'beam_options': PipelineOptions(args.beam_options.split())}


def add_spotify_command(commands: Any) -> None:
  spotify_command.add_command(commands)


def add_match_command(commands: Any) -> None:
  match.add_command(commands)


def add_musicbrainz_command(commands: Any) -> None:
  musicbrainz_command.add_command(commands)
