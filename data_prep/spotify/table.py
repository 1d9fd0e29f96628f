"""What a collection run writes: the track table and the report of what it skipped.

``tracks.csv`` has one row per track: the reference's columns plus
``artist_genres`` (every genre tag of the artist) and ``path`` (local audio,
filled by ``python -m data_prep match``); ``python -m data_prep build
--preset=spotify`` reads it. ``spotify_report.csv`` lists, one row each, every
playlist skipped, every genre that found no artist, every refused endpoint and
what was done instead.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

from crnn_jax.core import storage

FEATURE_COLUMNS = ('danceability', 'energy', 'key', 'loudness', 'mode', 'speechiness',
                   'acousticness', 'instrumentalness', 'liveness', 'valence', 'tempo',
                   'time_signature')
COLUMNS = ('id', 'name', 'artists', 'artist_id', 'album_id', 'playlist', 'genre', 'artist_genres',
           'preview_url', 'has_preview', 'path', 'popularity', 'duration_ms', 'explicit',
           *FEATURE_COLUMNS, 'num_sections')
REPORT_COLUMNS = ('kind', 'id', 'name', 'reason')


def track_row(track: dict, genre: str, playlist: str = '', album_id: str = '') -> dict[str, Any]:
  """A table row from a (full or simplified) track object; absent fields stay empty."""
  artists = [a for a in track.get('artists') or [] if a and a.get('id')]
  preview = track.get('preview_url') or ''
  row = dict.fromkeys(COLUMNS, '')
  row.update({
      'id': track['id'], 'name': track.get('name', ''),
      'artists': ';'.join(a.get('name', '') for a in artists),
      'artist_id': artists[0]['id'] if artists else '',
      'album_id': album_id or (track.get('album') or {}).get('id', ''),
      'playlist': playlist, 'genre': genre,
      'preview_url': preview, 'has_preview': int(bool(preview)),
      'duration_ms': track.get('duration_ms', ''),
      'explicit': '' if track.get('explicit') is None else bool(track['explicit']),
      'popularity': track.get('popularity', ''),
  })
  return row


def write_table(rows: Iterable[dict[str, Any]], path: str) -> None:
  rows = sorted(rows, key=lambda r: r['id'])
  with storage.atomic_write(path, newline='', encoding='utf-8') as f:
    w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
    w.writeheader()
    w.writerows(rows)


class Report:
  """Rows of spotify_report.csv: what was skipped or refused, and why."""

  def __init__(self) -> None:
    self.rows: list[tuple[str, str, str, str]] = []

  def add(self, kind: str, item_id: str, name: str, reason: str) -> None:
    self.rows.append((kind, item_id, name, reason))

  def write(self, path: str) -> None:
    with storage.atomic_write(path, newline='', encoding='utf-8') as f:
      w = csv.writer(f)
      w.writerow(REPORT_COLUMNS)
      w.writerows(self.rows)
