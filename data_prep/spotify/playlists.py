"""``--strategy=playlists``: playlists as labels (the reference's genres set).

For each genre word: the playlists a search by the word finds (2 pages of 50
in the reference), every track of each, labelled with the word (a track met
under several words keeps the last, as in the reference). Playlists the API
no longer serves are skipped with their reason in the report: Spotify's
editorial playlists (404 since 2024-11-27) and, in 2026 development mode,
every playlist the logged-in user does not own or collaborate on (403).

``--playlists_from=mine`` reads the logged-in user's own playlists instead
(``--auth=user``): a playlist is labelled with the genre words its name
contains as whole words (the last one wins). These are the playlists a
development-mode app is still served.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from data_prep.spotify.catalog import Catalog
from data_prep.spotify.table import track_row


def collect_playlists(catalog: Catalog, genres: Sequence[str], playlists_per_genre: int = 100,
                      tracks_per_playlist: int = 10_000, source: str = 'search',
                      progress: bool = True) -> list[dict[str, Any]]:
  """Tracks labelled by the genre word of their playlist; artist genres added."""
  mine = catalog.my_playlists() if source == 'mine' else []
  rows: dict[str, dict[str, Any]] = {}
  served = skipped = 0
  for genre in tqdm(genres, desc='genres', unit='genre', disable=not progress, file=sys.stderr):
    playlists = (catalog.search(genre, 'playlist', playlists_per_genre) if source == 'search'
                 else [p for p in mine if names_genre(p.get('name', ''), genre)])
    for pl in playlists:
      tracks, reason = catalog.playlist_tracks(pl['id'], tracks_per_playlist)
      if reason:
        skipped += 1
        catalog.report.add('playlist', pl['id'], pl.get('name', ''), reason)
        continue
      served += 1
      for track in tracks:
        rows[track['id']] = track_row(track, genre, pl.get('name', ''))  # the last genre wins
  if skipped and not served:
    catalog.client.log(f'no playlist served its tracks ({skipped} skipped, reasons in the '
                       'report): a development-mode app reads only playlists its logged-in '
                       'user owns or collaborates on; use --auth=user --playlists_from=mine, '
                       'an extended-quota app, or --strategy=artists')
  artists = catalog.artists(r['artist_id'] for r in rows.values())
  for r in rows.values():
    r['artist_genres'] = ';'.join((artists.get(r['artist_id']) or {}).get('genres') or [])
  return list(rows.values())


def names_genre(playlist_name: str, genre: str) -> bool:
  """Whether a playlist name holds the genre word as a whole word ('R&B Mix': r&b)."""
  return re.search(rf'(?<!\w){re.escape(genre.lower())}(?!\w)', playlist_name.lower()) is not None
