"""``--strategy=artists``: artist genres as labels (the reference's metal set).

Per query tag, as the reference: seed artists from the tracks of 3 playlists
a playlist search finds; keep an artist when the exact tag is among its
Spotify genres and it has no label yet (one label per artist: the first tag
that finds it); walk related artists depth first, stopping after 50
consecutive artists not added. Where that walk cannot run (related artists
refused since 2024-11, or no seed playlist serving its items in 2026
development mode) the artists come from a genre search (``genre:"<tag>"``),
with the same exact-tag rule and 50-miss stop.

Per artist: 5 of its first 10 albums, sampled with a seed per artist (a
resumed run picks the same), and their tracks that credit the artist. The
albums come from GET /artists/{id}/albums, or where that is refused, from a
track search by artist name (``artist:"<name>"``). Per track: popularity,
audio features and the number of audio-analysis sections, where still served.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

from data_prep.spotify.catalog import RELATED, Catalog
from data_prep.spotify.table import FEATURE_COLUMNS, track_row


@dataclasses.dataclass(frozen=True)
class Settings:
  """The strategy's sizes; the defaults are the reference's."""
  seed: int = 42  # album sampling
  seed_playlists: int = 3
  miss_limit: int = 50  # consecutive artists not added that end a walk or search
  albums_considered: int = 10
  albums_sampled: int = 5
  max_search_items: int = 1000  # artists read per tag by the genre search
  artist_search_tracks: int = 50  # tracks read per artist where artist albums are refused


def collect_artists(catalog: Catalog, genres: Sequence[str], settings: Settings,
                    progress: bool = True) -> list[dict[str, Any]]:
  """Artists labelled by their exact genre tag, then their tracks' rows."""
  labelled: dict[str, str] = {}  # artist id -> its one label
  artists: dict[str, dict] = {}  # every full artist object met
  for genre in tqdm(genres, desc='genres', unit='genre', disable=not progress, file=sys.stderr):
    if not find_artists(catalog, genre, labelled, artists, settings):
      tagged = sum(1 for a in artists.values() if genre in (a.get('genres') or []))
      reason = (f'no new artist: the {tagged} found with this tag have an earlier tag as label'
                if tagged else 'no artist found with this exact genre tag')
      catalog.report.add('genre', genre, genre, reason)
      catalog.client.log(f'genre {genre!r}: {reason}')
  rows: dict[str, dict[str, Any]] = {}
  for artist_id, genre in tqdm(labelled.items(), desc='artists', unit='artist',
                               disable=not progress, file=sys.stderr):
    artist = artists.get(artist_id, {'id': artist_id})
    for r in artist_tracks(catalog, artist, genre, settings):
      r['artist_id'] = artist_id
      r['artist_genres'] = ';'.join(artist.get('genres') or [])
      rows.setdefault(r['id'], r)
  add_track_details(catalog, list(rows.values()), progress)
  return list(rows.values())


def find_artists(catalog: Catalog, genre: str, labelled: dict[str, str],
                 artists: dict[str, dict], settings: Settings) -> list[str]:
  """Artists newly labelled with ``genre``, in the order found."""
  added: list[str] = []
  seen: set[str] = set()

  def take(artist: dict) -> bool:
    artists.setdefault(artist['id'], artist)
    if genre in (artist.get('genres') or []) and artist['id'] not in labelled:
      labelled[artist['id']] = genre
      added.append(artist['id'])
      return True
    return False

  seeds, served = seed_artists(catalog, genre, settings.seed_playlists)
  objects = catalog.artists(seeds)
  for sid in seeds:
    seen.add(sid)
    if (sid in objects and take(objects[sid])
        and not walk_related(catalog, sid, take, seen, settings.miss_limit)):
      break  # related artists refused: the genre search below takes over
  if not served:
    catalog.client.say_once('no_seeds', 'no seed playlist found or served for a tag: its '
                            'artists come from a genre search (genre:"<tag>") instead')
  if catalog.client.is_refused(RELATED) or not served:
    search_genre(catalog, genre, take, seen, settings)
  return added


def seed_artists(catalog: Catalog, genre: str, playlists: int) -> tuple[list[str], int]:
  """(artist ids on the first playlists a search finds, how many served items)."""
  seeds: list[str] = []
  served = 0
  for pl in catalog.search(genre, 'playlist', playlists):
    tracks, skipped = catalog.playlist_tracks(pl['id'], 10_000)
    if skipped:
      catalog.report.add('playlist', pl['id'], pl.get('name', ''), skipped)
      continue
    served += 1
    seeds.extend(a['id'] for t in tracks for a in t.get('artists') or [] if a and a.get('id'))
  return list(dict.fromkeys(seeds)), served


def walk_related(catalog: Catalog, start: str, take: Callable[[dict], bool], seen: set[str],
                 miss_limit: int) -> bool:
  """The reference's depth-first related-artist walk; False when refused."""
  stack, misses = [start], 0
  while stack and misses < miss_limit:
    related = catalog.related_artists(stack.pop())
    if related is None:
      return False
    for r in related:
      if r['id'] in seen:
        continue
      seen.add(r['id'])
      if take(r):
        misses = 0
        stack.append(r['id'])
      else:
        misses += 1
        if misses >= miss_limit:
          break
  return True


def search_genre(catalog: Catalog, genre: str, take: Callable[[dict], bool], seen: set[str],
                 settings: Settings) -> None:
  """Artists from ``genre:"<tag>"``, read lazily until 50 misses in a row."""
  misses = 0
  for artist in catalog.search(f'genre:"{genre}"', 'artist', settings.max_search_items):
    if artist['id'] in seen:
      continue
    seen.add(artist['id'])
    if take(artist):
      misses = 0
    else:
      misses += 1
      if misses >= settings.miss_limit:
        return


def artist_tracks(catalog: Catalog, artist: dict, genre: str, settings: Settings
                  ) -> list[dict[str, Any]]:
  """Rows of the tracks of ``albums_sampled`` of the artist's first
  ``albums_considered`` albums that credit the artist."""
  artist_id = artist['id']
  albums = catalog.artist_albums(artist_id, settings.albums_considered)
  if albums is None:
    albums = catalog.albums_by_search(artist.get('name', ''), artist_id,
                                      settings.artist_search_tracks)
  albums = albums[:settings.albums_considered]
  rng = random.Random(f'{settings.seed}:{artist_id}')
  rows = []
  for album in rng.sample(albums, min(settings.albums_sampled, len(albums))):
    for t in catalog.album_tracks(album['id']):
      if artist_id in {a.get('id') for a in t.get('artists') or [] if a}:
        rows.append(track_row(t, genre, album_id=album['id']))
  return rows


def add_track_details(catalog: Catalog, rows: list[dict[str, Any]], progress: bool) -> None:
  """Popularity, audio features and number of sections, where still served."""
  by_id = {r['id']: r for r in rows}
  ids = list(by_id)
  for tid, value in catalog.popularity(ids).items():
    by_id[tid]['popularity'] = value
  for tid, features in catalog.audio_features(ids).items():
    if tid in by_id:
      by_id[tid].update({c: features.get(c, '') for c in FEATURE_COLUMNS})
  for tid in tqdm(ids, desc='audio analysis', unit='track', disable=not progress,
                  file=sys.stderr, leave=False):
    analysis = catalog.audio_analysis(tid)
    if analysis is None:
      break
    by_id[tid]['num_sections'] = len(analysis.get('sections') or [])
