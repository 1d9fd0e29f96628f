"""``python -m data_prep match``: give Spotify track-table rows local audio files.

Since late 2024 a new Spotify app gets no preview URLs, so the collector keeps
tracks without audio. This fills the table's ``path`` column from a local
library by artist and title, read from the file's path as libraries are
usually laid out: ``Artist/Album/03 Title.mp3``, ``Artist - Title.flac``, ...

Names are compared normalised (case, accents, punctuation, bracketed or
dash-suffixed qualifiers such as "(Remastered 2011)" or "- Live" removed, leading
track numbers dropped). A row matches a file when the titles are equal and the
row's first artist appears in the file's relative path. Rows with several
candidate files take the first in sorted order and are counted as ambiguous;
rows without a match keep an empty path (``build`` then reports them).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import unicodedata
from typing import Any

from crnn_jax.core import storage
from crnn_jax.core.audio import AUDIO_EXTENSIONS

_QUALIFIER = re.compile(r'\s*[\(\[][^\)\]]*[\)\]]')
_DASH_SUFFIX = re.compile(
    r'\s+-\s+.*\b(remaster(ed)?|live|version|edit|mix|mono|stereo|demo|bonus)\b.*$', re.IGNORECASE)
_TRACK_NUMBER = re.compile(r'^\s*(\d{1,3}|[a-d]\d{1,2})\s*([.\-_)]\s*|\s+)')


def normalise(text: str) -> str:
  """Lower case ASCII words: 'Motörhead – Ace of Spades (Live)' -> 'motorhead ace of spades'."""
  text = _DASH_SUFFIX.sub('', _QUALIFIER.sub('', text))
  text = unicodedata.normalize('NFKD', text)
  text = ''.join(c for c in text if not unicodedata.combining(c)).lower()
  return ' '.join(re.sub(r'[^a-z0-9]+', ' ', text).split())


def file_title(rel_path: str) -> set[str]:
  """Normalised titles a file name may carry: the whole stem, and after 'Artist - '."""
  stem = os.path.splitext(os.path.basename(rel_path))[0]
  stem = _TRACK_NUMBER.sub('', stem)
  titles = {normalise(stem)}
  if ' - ' in stem:
    titles.add(normalise(stem.split(' - ', 1)[1]))
  return {t for t in titles if t}


def index_library(library: str) -> dict[str, list[tuple[str, str]]]:
  """title -> [(normalised relative path, absolute path)], files in sorted order."""
  index: dict[str, list[tuple[str, str]]] = {}
  for dirpath, dirnames, filenames in os.walk(library):
    dirnames.sort()
    for fname in sorted(filenames):
      if os.path.splitext(fname)[1].lower() not in AUDIO_EXTENSIONS:
        continue
      full = os.path.join(dirpath, fname)
      rel = os.path.relpath(full, library)
      norm_rel = normalise(rel.replace(os.sep, ' '))
      for title in file_title(rel):
        index.setdefault(title, []).append((norm_rel, full))
  return index


def match_table(table: str, library: str, out: str) -> dict[str, int]:
  """Writes ``out``: the table with ``path`` filled where a local file matches."""
  index = index_library(library)
  with open(table, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    fields = list(reader.fieldnames or [])
    rows = list(reader)
  if 'path' not in fields:
    fields.append('path')
  counts = {'rows': len(rows), 'had_path': 0, 'matched': 0, 'ambiguous': 0, 'unmatched': 0}
  for row in rows:
    if (row.get('path') or '').strip():
      counts['had_path'] += 1
      continue
    title = normalise(row.get('name', ''))
    artist = normalise((row.get('artists') or row.get('artist') or '').split(';')[0])
    candidates = [full for norm_rel, full in index.get(title, [])
                  if artist and f' {artist} ' in f' {norm_rel} ']
    if not candidates:
      counts['unmatched'] += 1
      continue
    counts['matched'] += 1
    counts['ambiguous'] += len(set(candidates)) > 1
    row['path'] = os.path.abspath(candidates[0])
  with storage.atomic_write(out, newline='', encoding='utf-8') as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
  return counts


def add_command(commands: Any) -> None:
  p = commands.add_parser('match', help='fill a track table\'s path column from a local library',
                          description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--table', required=True, help='track table CSV (from `spotify`)')
  p.add_argument('--library', required=True, help='folder of local audio files')
  p.add_argument('--out', default='', help='output CSV (default: <table>_matched.csv)')
  p.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
  out = args.out or os.path.splitext(args.table)[0] + '_matched.csv'
  try:
    counts = match_table(args.table, args.library, out)
  except OSError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f"wrote {out}: {counts['matched']} of {counts['rows']} rows matched "
        f"({counts['ambiguous']} ambiguous, first file taken), {counts['had_path']} already had "
        f"a path, {counts['unmatched']} unmatched")
  return 0
