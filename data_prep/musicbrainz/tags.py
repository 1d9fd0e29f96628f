"""Artist names for a local library: from the files' tags, or a manifest column.

Tags are read with mutagen (ID3 in MP3 and WAV, Vorbis comments in FLAC and
Ogg, MP4 atoms); the first artist of a multi-valued tag is the track's artist.
Old taggers wrote local code pages into fields marked Latin-1, so names
arrive garbled: UTF-8 read as Latin-1 ('MotÃ¶rhead') and Windows-1251 read
as Latin-1 ('Êèíî') are repaired and the repair reported; a file without an
artist tag, or with an undecodable one, is reported and left out.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys

import mutagen
from tqdm import tqdm

from crnn_jax.core.audio import AUDIO_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class Named:
  """A file and the artist name it carries."""
  path: str
  artist: str


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A file (or manifest row) without a usable artist name, or a repair made."""
  origin: str
  reason: str


def repair(text: str) -> str:
  """The name a mis-decoded tag meant, or the text unchanged."""
  if text.isascii():
    return text
  for codec in ('latin-1', 'cp1252'):
    try:
      raw = text.encode(codec)
      break
    except UnicodeEncodeError:
      continue
  else:
    return text
  try:
    return raw.decode('utf-8')  # UTF-8 bytes shown as Latin-1
  except UnicodeDecodeError:
    pass
  letters = [c for c in text if c.isalpha()]
  high = [c for c in letters if not c.isascii()]
  # Cyrillic read as Latin-1: nearly every letter in À..ÿ (a 'Björk' has one or two).
  if high and len(high) > len(letters) / 2 and all('\u00c0' <= c <= '\u00ff' for c in high):
    fixed = raw.decode('cp1251', errors='replace')
    if all('\u0400' <= c <= '\u04ff' for c in fixed if c.isalpha() and not c.isascii()):
      return fixed
  return text


def artist_tag(path: str) -> tuple[str, str]:
  """(artist, '') or ('', why not) for one audio file."""
  try:
    f = mutagen.File(path, easy=True)
  except mutagen.MutagenError as e:  # junk, truncated, missing: mutagen's errors, not OSError
    return '', f'unreadable tags: {str(e).splitlines()[0][:120]}'
  if f is None:
    return '', 'unreadable tags: not a format mutagen knows'
  tags = f.tags or {}
  values = tags.get('artist') or tags.get('albumartist') or []
  if not values and 'TPE1' in tags:  # WAV: raw ID3 frames even with easy=True
    values = list(tags['TPE1'].text)
  names = [str(v).strip() for v in values if str(v).strip()]
  if not names:
    return '', 'no artist tag'
  if '\ufffd' in names[0]:
    return '', f'undecodable artist tag {names[0]!r}'
  return names[0], ''


def read_library(folder: str, progress: bool = True) -> tuple[list[Named], list[Skipped]]:
  """Every audio file under ``folder`` (sorted) with its artist tag."""
  if not os.path.isdir(folder):
    raise ValueError(f'library {folder!r} is not a folder')
  paths = []
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames.sort()
    paths += [os.path.join(dirpath, n) for n in sorted(filenames)
              if os.path.splitext(n)[1].lower() in AUDIO_EXTENSIONS]
  named, skipped = [], []
  for path in tqdm(paths, desc='tags', unit='file', disable=not progress, file=sys.stderr):
    artist, problem = artist_tag(path)
    _add(os.path.abspath(path), artist, problem, named, skipped)
  return named, skipped


def read_manifest(csv_path: str, artist_column: str = 'artist', path_column: str = 'path'
                  ) -> tuple[list[Named], list[Skipped]]:
  """Paths and artist names from a CSV's columns (paths relative to the CSV)."""
  root = os.path.dirname(os.path.abspath(csv_path))
  named, skipped = [], []
  with open(csv_path, newline='', encoding='utf-8-sig', errors='replace') as f:
    reader = csv.DictReader(f)
    missing = [c for c in (artist_column, path_column) if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f'{csv_path} has no column {missing[0]!r} (columns: '
                       f'{(reader.fieldnames or [])[:20]})')
    for row in reader:
      origin = f'{csv_path}:{reader.line_num}'
      path = (row.get(path_column) or '').strip()
      if not path:
        skipped.append(Skipped(origin, f'missing field: {path_column}'))
        continue
      artist = (row.get(artist_column) or '').split(';')[0].strip()
      problem = '' if artist else f'missing field: {artist_column}'
      if '\ufffd' in artist:
        artist, problem = '', f'undecodable {artist_column} {artist!r}'
      _add(path if os.path.isabs(path) else os.path.join(root, path), artist, problem, named,
           skipped)
  return named, skipped


def _add(path: str, artist: str, problem: str, named: list[Named], skipped: list[Skipped]
         ) -> None:
  if problem:
    skipped.append(Skipped(path, problem))
    return
  fixed = repair(artist)
  if fixed != artist:
    skipped.append(Skipped(path, f'artist tag re-decoded: {artist!r} -> {fixed!r} (kept)'))
  named.append(Named(path, fixed))
