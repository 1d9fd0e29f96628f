"""Manifest CSV sources: rows naming audio, label(s), artist and tabular values.

Presets (``read_manifest(..., preset=...)``):

  '' (generic)        columns ``path`` and ``label`` (or only ``labels``: the
                      first is the training label) required; optional
                      ``labels`` (label set: ';' or '|' separated, or a Python
                      list literal), ``artist`` (or ``artist_id``), ``track_id``
                      (or ``id``; default: the path without extension), ``split``
                      (train, validation or test: your own split, which ``build
                      --split_by=source`` keeps), and any of the reference's 16
                      tabular columns (docs/reference.md section 3).
  'metal_track_data'  the reference's (and ``python -m data_prep spotify``'s)
  / 'spotify'         track table: ``id`` (audio at ``<id[0:2]>/<id>.mp3`` under
                      audio_root), ``genre`` (label), ``artist_id`` or
                      ``artist``, ``artist_genres`` (label set), Spotify's
                      feature columns by their API names; a ``path`` column,
                      where present, wins over the id layout.
  'fma'               FMA metadata: ``tracks.csv`` (two header rows + a
                      ``track_id`` row): label = ('track', 'genre_top'), label
                      set = the top-level genres of ('track', 'genres_all')
                      through ``genres.csv`` beside it, artist = ('artist',
                      'id'), audio at ``<tid:06d>[0:3]/<tid:06d>.mp3``; with
                      ``echonest=echonest.csv``, the Echo Nest audio features
                      (acousticness, danceability, energy, instrumentalness,
                      liveness, speechiness, tempo, valence) as tabular columns.
                      ``subset`` ('small'/'medium'/'large') keeps that FMA
                      subset's rows. Each track's official split is FMA's
                      ('set', 'split') (training/validation/test), which
                      ``build --split_by=source`` keeps.
  'mtg_jamendo'       MTG-Jamendo's TSVs (``TRACK_ID ARTIST_ID ALBUM_ID PATH
                      DURATION TAGS...``, tab-separated, a variable number of
                      ``category---tag`` columns, CRLF line ends): one TSV
                      (e.g. ``autotagging_genre.tsv``), or a split folder
                      (``data/splits/split-0``) whose
                      ``autotagging_genre-{train,validation,test}.tsv`` give
                      the official split. Label set = the ``genre---`` tags
                      (a multi-label set: train with ``multilabel``), label =
                      the first of them (the files list them alphabetically;
                      ``build --classes`` with every tag keeps the tags that
                      are never first as classes too); artist = ARTIST_ID;
                      audio at PATH under audio_root, or its low-quality
                      ``.low.mp3``.

Rows that cannot become a track (missing path or label, unreadable CSV rows)
are returned as problems for the build's report; tabular values are kept raw
and checked by the build, which reports non-numeric ones.
"""

from __future__ import annotations

import ast
import csv
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from crnn_jax.core import storage
from crnn_jax.core.tabular import REFERENCE_COLUMNS
from data_prep.records import Problem, Source, Track

MTG_COLUMNS = ('TRACK_ID', 'ARTIST_ID', 'ALBUM_ID', 'PATH', 'DURATION')
MTG_SPLIT_FILE = 'autotagging_genre-{split}.tsv'
FOLDER_PRESETS = ('mtg_jamendo',)
ECHONEST_FEATURES = ('acousticness', 'danceability', 'energy', 'instrumentalness', 'liveness',
                     'speechiness', 'tempo', 'valence')
FMA_SUBSETS = ('small', 'medium', 'large', 'full')
# Generic and Spotify-layout manifests: the columns read, first non-empty wins.
ID_COLUMNS = ('track_id', 'id')
PATH_COLUMNS = ('path', 'audio_path', 'filename')
ARTIST_COLUMNS = ('artist_id', 'artist', 'artists', 'artist_name')
SPLIT_COLUMN = 'split'
# A manifest's split names -> the build's (train, validation, test).
SPLIT_NAMES = {'train': 'train', 'training': 'train', 'validation': 'validation',
               'valid': 'validation', 'val': 'validation', 'test': 'test'}


def parse_label_set(text: str) -> list[str]:
  """'a;b', 'a|b' or a list literal "['a', 'b']" -> ['a', 'b'] (literals are not run)."""
  text = (text or '').strip()
  if not text:
    return []
  if text.startswith('['):
    try:
      value = ast.literal_eval(text)
      if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    except (ValueError, SyntaxError):
      pass
    text = text.strip('[]')
  sep = ';' if ';' in text else '|' if '|' in text else ','
  return [part.strip().strip('\'"') for part in text.split(sep) if part.strip().strip('\'"')]


def _first(row: dict[str, str], names: Sequence[str]) -> str:
  for n in names:
    value = row.get(n)
    if value is not None and value.strip():
      return value.strip()
  return ''


def _body_rows(reader: Any, width: int,
               skip: Callable[[list[str]], bool] = lambda cells: False
               ) -> Iterator[tuple[int, list[str] | None, str]]:
  """(line number, cells or None, error) of the rows a ``csv.reader`` has left
  below a CSV's header: blank rows and those ``skip`` names passed over, an
  unreadable row or one not ``width`` fields wide reported rather than raised."""
  while True:
    try:
      cells = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      yield reader.line_num, None, f'unreadable CSV row: {e}'
      continue
    if skip(cells) or not any(c.strip() for c in cells):
      continue
    if len(cells) != width:
      yield reader.line_num, None, f'malformed CSV row: {len(cells)} fields, header has {width}'
      continue
    yield reader.line_num, cells, ''


def _rows(path: str, wanted: set[str] | None = None
          ) -> Iterator[tuple[int, dict[str, str] | None, str]]:
  """(line number, row or None, error) of a one-header CSV; bad rows don't stop
  it. A row holds only the ``wanted`` columns (all when None): a CSV of a
  million columns costs one row's cells at a time."""
  # Undecodable bytes become U+FFFD: such a row then names no file and is reported.
  with open(path, newline='', encoding='utf-8-sig', errors='replace') as f:
    reader = csv.reader(f)
    try:
      header = [h.strip() for h in next(reader)]
    except StopIteration:
      return
    except csv.Error as e:
      raise ValueError(f'{path}: unreadable CSV header ({e})') from None
    keep = [(i, h) for i, h in enumerate(header) if wanted is None or h in wanted]
    for line, cells, error in _body_rows(reader, len(header)):
      yield line, None if cells is None else {h: cells[i] for i, h in keep}, error


def _multi_header_rows(path: str, levels: int) -> Iterator[tuple[int, dict[str, str] | None, str]]:
  """Rows of a pandas multi-index CSV (FMA): keys 'level0.level1[.level2]'; the
  first column (the index, e.g. track_id) under key 'index'."""
  with open(path, newline='', encoding='utf-8', errors='replace') as f:
    reader = csv.reader(f)
    heads = []
    for _ in range(levels):  # next() here: a StopIteration would end the generator as RuntimeError
      try:
        heads.append(next(reader))
      except (StopIteration, csv.Error):
        raise ValueError(f'{path}: not an FMA metadata CSV (expected {levels} header rows, '
                         f'found {len(heads)})') from None
    width = len(heads[-1])
    keys = ['index'] + ['.'.join(h[i].strip() for h in heads) for i in range(1, width)]
    for line, cells, error in _body_rows(reader, width, skip=_is_index_name_row):
      yield line, None if cells is None else dict(zip(keys, cells)), error


def _is_index_name_row(cells: list[str]) -> bool:
  """pandas' row naming the index under a multi-row header: 'track_id' and blanks."""
  return bool(cells) and cells[0].strip() == 'track_id' and not any(c.strip() for c in cells[1:])


def read_manifest(csv_path: str, preset: str = '', audio_root: str = '', echonest: str = '',
                  subset: str = '') -> Source:
  """A manifest CSV -> Source (tracks, problems, tabular columns)."""
  csv_path = os.path.abspath(csv_path)
  if audio_root:  # a remote root (gs://...) stays as it is
    root = audio_root if storage.is_remote(audio_root) else os.path.abspath(audio_root)
  else:
    root = os.path.dirname(csv_path)
  if preset == 'fma':
    return _read_fma(csv_path, root, echonest, subset)
  if preset == 'mtg_jamendo':
    return _read_mtg_jamendo(csv_path, os.path.abspath(audio_root) if audio_root else
                             (csv_path if os.path.isdir(csv_path) else root))
  if preset not in ('', 'generic', 'metal_track_data', 'spotify'):
    raise ValueError(f"unknown manifest preset {preset!r}: use '', 'metal_track_data', "
                     "'spotify', 'fma' or 'mtg_jamendo'")
  spotify_layout = preset in ('metal_track_data', 'spotify')
  try:
    with open(csv_path, newline='', encoding='utf-8-sig', errors='replace') as f:
      header = [h.strip() for h in next(csv.reader(f), [])]
  except csv.Error as e:
    raise ValueError(f'manifest {csv_path}: unreadable header ({e})') from None
  tabular = tuple(c for c in REFERENCE_COLUMNS if c in header)
  label_cols = ('genre', 'label') if spotify_layout else ('label',)
  set_cols = ('labels', 'artist_genres', 'genres')
  wanted = {*ID_COLUMNS, *PATH_COLUMNS, *ARTIST_COLUMNS, *label_cols, *set_cols, *tabular,
            SPLIT_COLUMN}
  if not any(c in header for c in label_cols + set_cols):
    raise ValueError(f'manifest {csv_path} has no label column (expected one of '
                     f'{label_cols + set_cols}); '
                     f'columns: {header[:20]}')
  tracks, problems = [], []
  for line, row, error in _rows(csv_path, wanted):
    origin = f'{csv_path}:{line}'
    if row is None:
      problems.append(Problem(origin, '', error))
      continue
    track_id = _first(row, ID_COLUMNS)
    path = _first(row, PATH_COLUMNS)
    if not path and spotify_layout and track_id:
      path = os.path.join(track_id[:2], track_id + '.mp3')
    if not path:
      problems.append(Problem(origin, track_id, 'missing field: path'))
      continue
    full = path if os.path.isabs(path) or storage.is_remote(path) else os.path.join(root, path)
    if not track_id:
      track_id = os.path.splitext(path)[0].replace(os.sep, '/')
    label_set = parse_label_set(_first(row, set_cols))
    # A row with only a label set trains on its first label (and keeps the set).
    label = _first(row, label_cols) or (label_set[0] if label_set else '')
    if not label:
      problems.append(Problem(origin, track_id, f'missing field: {label_cols[0]}'))
      continue
    split = _first(row, (SPLIT_COLUMN,))
    if split and split.lower() not in SPLIT_NAMES:
      problems.append(Problem(origin, track_id, f'unknown split: {split!r} (use train, '
                              'validation or test, or leave it empty)'))
      continue
    artist = _first(row, ARTIST_COLUMNS)
    tracks.append(Track(track_id=track_id, path=full, label=label,
                        labels=tuple(dict.fromkeys([label] + label_set)),
                        artist_id=artist or track_id, origin=origin,
                        tabular={c: row.get(c, '') for c in tabular}, artist_known=bool(artist),
                        split=SPLIT_NAMES.get(split.lower(), '')))
  return Source(tracks, problems, tabular, f'manifest:{csv_path}' + (f' ({preset})' if preset else ''))


def _fma_genres(tracks_csv: str) -> dict[str, str]:
  """genre id -> title of its top-level genre, from genres.csv beside tracks.csv."""
  path = os.path.join(os.path.dirname(tracks_csv), 'genres.csv')
  if not os.path.exists(path):
    return {}
  titles, top = {}, {}
  for _, row, _ in _rows(path):
    if row:
      if 'genre_id' not in row or 'title' not in row:
        raise ValueError(f'{path}: not FMA\'s genres.csv (needs columns genre_id, title, '
                         f'top_level; has {list(row)[:10]})')
      titles[row['genre_id']] = row['title']
      top[row['genre_id']] = row.get('top_level', '')
  return {g: titles.get(top[g], '') for g in titles if top.get(g)}


def _read_fma(tracks_csv: str, root: str, echonest: str, subset: str) -> Source:
  if subset and subset not in FMA_SUBSETS:
    raise ValueError(f'unknown FMA subset {subset!r}: use one of {FMA_SUBSETS}')
  top_of = _fma_genres(tracks_csv)
  features: dict[str, dict[str, str]] = {}
  tabular: tuple[str, ...] = ()
  if echonest:
    tabular = ECHONEST_FEATURES
    for _, row, _ in _multi_header_rows(echonest, 3):
      if row:
        features[row['index'].strip()] = {
            c: row.get(f'echonest.audio_features.{c}', '') for c in ECHONEST_FEATURES}
  max_subset = FMA_SUBSETS.index(subset) if subset else len(FMA_SUBSETS)
  tracks, problems = [], []
  for line, row, error in _multi_header_rows(tracks_csv, 2):
    origin = f'{tracks_csv}:{line}'
    if row is None:
      problems.append(Problem(origin, '', error))
      continue
    tid = row['index'].strip()
    if not tid.isdigit():
      problems.append(Problem(origin, tid, f'non-numeric track_id: {tid[:20]!r}'))
      continue
    row_subset = row.get('set.subset', '').strip()
    if subset and row_subset in FMA_SUBSETS and FMA_SUBSETS.index(row_subset) > max_subset:
      continue  # another subset's track: not part of this data set, not a problem
    name = f'{int(tid):06d}'
    label = row.get('track.genre_top', '').strip()
    if not label:
      problems.append(Problem(origin, name, 'missing field: genre_top'))
      continue
    label_set = [top_of.get(g, '') for g in parse_label_set(row.get('track.genres_all', ''))]
    artist = row.get('artist.id', '').strip()
    tracks.append(Track(
        track_id=name, path=os.path.join(root, name[:3], name + '.mp3'), label=label,
        labels=tuple(dict.fromkeys([label] + [g for g in label_set if g])),
        artist_id=artist or name, origin=origin, tabular=dict(features.get(tid, {})),
        artist_known=bool(artist), split=SPLIT_NAMES.get(row.get('set.split', '').strip(), '')))
  return Source(tracks, problems, tabular, f'manifest:{tracks_csv} (fma)')


def _read_mtg_jamendo(path: str, root: str) -> Source:
  """MTG-Jamendo: one TSV, or a split folder's three genre TSVs (official split)."""
  if os.path.isdir(path):
    parts = [(s, os.path.join(path, MTG_SPLIT_FILE.format(split=s))) for s in
             ('train', 'validation', 'test')]
    missing = [f for _, f in parts if not os.path.isfile(f)]
    if missing:
      raise ValueError(f'{path}: not an MTG-Jamendo split folder (no {missing[0]})')
  else:
    parts = [('', path)]
  tracks, problems = [], []
  for split, tsv in parts:
    for line, cells in _tsv_rows(tsv):
      origin = f'{tsv}:{line}'
      if cells[0] == MTG_COLUMNS[0]:
        continue  # the header
      track = _mtg_track(cells, root, origin, split)
      if isinstance(track, Problem):
        problems.append(track)
      else:
        tracks.append(track)
  return Source(tracks, problems, (), f'manifest:{path} (mtg_jamendo)')


def _tsv_rows(path: str) -> Iterator[tuple[int, list[str]]]:
  """(line number, cells) of a tab-separated file; CRLF and bad bytes tolerated."""
  with open(path, newline='', encoding='utf-8', errors='replace') as f:
    for line, text in enumerate(f, start=1):
      cells = [c.strip() for c in text.rstrip('\r\n').split('\t')]
      if any(cells):
        yield line, cells


def _mtg_track(cells: list[str], root: str, origin: str, split: str) -> Track | Problem:
  if len(cells) < len(MTG_COLUMNS) + 1:
    return Problem(origin, cells[0], f'malformed TSV row: {len(cells)} fields, expected '
                   f'{len(MTG_COLUMNS)} and at least one tag')
  track_id, artist_id, _, rel, _ = cells[:len(MTG_COLUMNS)]
  tags = cells[len(MTG_COLUMNS):]
  odd = [t for t in tags if '---' not in t]
  if odd or not track_id or not rel:
    return Problem(origin, track_id, f'malformed TSV row: tag {odd[0][:40]!r} is not '
                   'category---tag' if odd else 'malformed TSV row: empty TRACK_ID or PATH')
  genres = [t.split('---', 1)[1] for t in tags if t.startswith('genre---')]
  if not genres:
    return Problem(origin, track_id, 'missing field: no genre--- tag')
  path = os.path.join(root, rel)
  low = os.path.splitext(path)[0] + '.low.mp3'
  if not os.path.exists(path) and os.path.exists(low):
    path = low  # the low-quality download: same folders, '.low.mp3'
  return Track(track_id=track_id, path=path, label=genres[0], labels=tuple(dict.fromkeys(genres)),
               artist_id=artist_id or track_id, origin=origin, artist_known=bool(artist_id),
               split=split)
