"""``python -m data_prep spotify``: the reference's two Spotify collection strategies.

  --strategy=playlists  "playlists as labels" (the genres set): search playlists
                        by each genre word (2 pages of 50), label every track of
                        every playlist with the query word (the last query that
                        meets a track wins, as in the reference).
  --strategy=artists    "artist genres as labels" (the metal set): per query tag,
                        3 playlists seed artists; an artist is kept when the exact
                        tag is among its Spotify genres and it has no label yet (one
                        label per artist: the first tag that finds it); a
                        depth-first related-artist walk stops after 50 consecutive
                        artists not added. Per artist, 5 of its first 10 albums
                        (seeded per artist), their tracks that list the artist;
                        per track explicit, duration, popularity, audio features
                        and the number of audio-analysis sections.

Output in --out: ``tracks.csv`` (one row per track: the reference's columns plus
``artist_genres``, every genre tag of the artist; read it with ``python -m
data_prep build --input=OUT/tracks.csv --preset=spotify``), previews in
``previews/<id[0:2]>/<id>.mp3``, and ``spotify_cache.sqlite``, every answered
request, so a rerun (after a crash, Ctrl-C or a rate-limit stop) replays what is
done and continues. Credentials come from the environment variables spotipy
reads (SPOTIPY_CLIENT_ID, SPOTIPY_CLIENT_SECRET); the token stays in memory.

Today's API (SPEC.md section 1) is detected, reported once in one line each,
and worked around:
  - audio-features / audio-analysis 403: feature columns left empty; build with
    ``--tabular=audio`` to compute them from the audio (crnn_jax.core.audio_features);
  - related-artists 403: the walk searches artists by genre tag instead
    (``genre:"<tag>"``), with the same exact-tag filter and 50-miss stop;
  - null preview URLs: tracks are kept (has_preview 0) for matching with local
    audio through a ``path`` column;
  - search pages of at most 10 items: paging continues with the smaller pages;
  - popularity missing from track objects: the column stays empty.
HTTP 429 waits for Retry-After (or backs off exponentially) and retries; a wait
longer than --max_wait stops the run with a one-line message (rerun later).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import email.utils
import json
import logging
import math
import os
import random
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import requests
import spotipy
from spotipy.cache_handler import MemoryCacheHandler
from tqdm import tqdm

from crnn_jax.core import files, labels

FEATURE_COLUMNS = ('danceability', 'energy', 'key', 'loudness', 'mode', 'speechiness',
                   'acousticness', 'instrumentalness', 'liveness', 'valence', 'tempo',
                   'time_signature')
COLUMNS = ('id', 'name', 'artists', 'artist_id', 'album_id', 'playlist', 'genre', 'artist_genres',
           'preview_url', 'has_preview', 'path', 'popularity', 'duration_ms', 'explicit',
           *FEATURE_COLUMNS, 'num_sections')
SMALL_PAGE = 10  # development-mode search page size since 2026
# Endpoints development-mode apps lost on 2024-11-27: HTTP 403 (or 404) means "refused".
RESTRICTED = {
    'audio_features': 'audio-features refused: acousticness..valence left empty; build with '
                      '--tabular=audio to compute tabular features from the audio',
    'audio_analysis': 'audio-analysis refused: num_sections left empty; build with '
                      '--tabular=audio to estimate it from the audio',
    'artist_related_artists': 'related-artists refused: walking artists found by searching '
                              'their genre tag instead',
}
NOTICES = {
    'no_previews': 'preview URLs are null (new apps since 2024-11-27): tracks kept without '
                   'previews (has_preview=0); add a path column pointing at local audio',
    'small_pages': 'search returns at most {limit} items a page (development mode, 2026): '
                   'paging with smaller pages',
    'no_popularity': 'track objects carry no popularity (removed 2026): column left empty',
}


MAX_BACKOFF = 60.0  # longest exponential backoff between retries (s)
MAX_PREVIEW_WAIT = 60.0  # longest Retry-After honoured for a preview download (s)


class CollectorError(Exception):
  """A stop the user must act on (credentials, Premium, rate limit); one line."""


def retry_wait(retry_after: str | None, attempt: int) -> float:
  """Seconds to wait before a retry: Retry-After in seconds or as an HTTP-date
  (RFC 9110 allows both), else (absent or unparsable) exponential backoff."""
  backoff = min(2.0 ** attempt, MAX_BACKOFF)
  if not retry_after:
    return backoff
  try:
    wait = float(retry_after)
  except ValueError:
    try:
      when = email.utils.parsedate_to_datetime(retry_after)
    except (TypeError, ValueError, IndexError):
      return backoff
    if when.tzinfo is None:  # an HTTP-date is GMT
      when = when.replace(tzinfo=datetime.UTC)
    wait = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
  return max(0.0, wait) if math.isfinite(wait) else backoff


class Api:
  """spotipy behind a response cache, rate-limit handling and refusal detection."""

  def __init__(self, sp: Any, cache_path: str, sleep: Callable[[float], None] = time.sleep,
               log: Callable[[str], None] = print, max_wait: float = 3600.0,
               max_retries: int = 6):
    self.sp = sp
    self.sleep = sleep
    self.log = log
    self.max_wait = max_wait
    self.max_retries = max_retries
    self.refused: set[str] = set()
    self.notified: set[str] = set()
    self.calls = 0  # HTTP requests made (not cache hits)
    os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
    self.db = sqlite3.connect(cache_path)
    self.db.execute('CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT)')
    self.db.commit()

  def notice(self, key: str, **fmt: Any) -> None:
    """A fact about today's API, said once per run in one line."""
    if key not in self.notified:
      self.notified.add(key)
      self.log('Spotify API: ' + NOTICES[key].format(**fmt))

  def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
    """sp.<method>(*args, **kwargs), cached; None when the endpoint is refused."""
    if method in self.refused:
      return None
    key = json.dumps([method, args, kwargs], sort_keys=True)
    row = self.db.execute('SELECT value FROM responses WHERE key = ?', (key,)).fetchone()
    if row is not None:
      return json.loads(row[0])
    result = self._live(method, *args, **kwargs)
    if method in self.refused:
      return None
    self.db.execute('INSERT OR REPLACE INTO responses VALUES (?, ?)', (key, json.dumps(result)))
    self.db.commit()
    return result

  def _live(self, method: str, *args: Any, **kwargs: Any) -> Any:
    for attempt in range(self.max_retries + 1):
      try:
        self.calls += 1
        with warnings.catch_warnings():
          warnings.simplefilter('ignore', DeprecationWarning)
          return getattr(self.sp, method)(*args, **kwargs)
      except spotipy.SpotifyException as e:
        status = e.http_status
        if status == 429:
          retry_after = (e.headers or {}).get('Retry-After') or (e.headers or {}).get('retry-after')
          self._wait_rate_limit(retry_wait(retry_after, attempt))
          continue
        if status in (403, 404) and method in RESTRICTED:
          self.refused.add(method)
          self.log(f'Spotify API: {RESTRICTED[method]} (HTTP {status})')
          return None
        if status in (401, 403):
          detail = str(e.msg).splitlines()[-1].strip()[:160] if e.msg else ''
          raise CollectorError(
              f'Spotify refused {method} (HTTP {status}: {detail}); check SPOTIPY_CLIENT_ID/'
              'SPOTIPY_CLIENT_SECRET; since 2026 development-mode apps also need the owner to '
              'have Premium') from None
        if status is not None and status >= 500 and attempt < self.max_retries:
          self.sleep(min(2.0 ** attempt, MAX_BACKOFF))
          continue
        raise
      except spotipy.oauth2.SpotifyOauthError as e:  # the token request; not a SpotifyException
        response = getattr(e.__context__, 'response', None)  # spotipy's HTTPError
        status = getattr(response, 'status_code', None)
        if status == 429:
          self._wait_rate_limit(retry_wait(response.headers.get('Retry-After'), attempt))
          continue
        if status is not None and status >= 500 and attempt < self.max_retries:
          self.sleep(min(2.0 ** attempt, MAX_BACKOFF))
          continue
        detail = ': '.join(str(x) for x in (e.error, e.error_description) if x)[:160]
        where = f'HTTP {status}: {detail}' if status else detail
        raise CollectorError(
            f'Spotify refused the client credentials ({where}); check '
            'SPOTIPY_CLIENT_ID/SPOTIPY_CLIENT_SECRET; since 2026 development-mode apps also need '
            'the owner to have Premium') from None
      except (requests.ConnectionError, requests.Timeout):
        if attempt >= self.max_retries:
          raise
        self.sleep(min(2.0 ** attempt, MAX_BACKOFF))
    raise CollectorError(f'Spotify {method}: still failing after {self.max_retries} retries; '
                         'rerun later (finished requests are kept)')

  def _wait_rate_limit(self, wait: float) -> None:
    """Sleeps through an HTTP 429; a wait longer than max_wait stops the run."""
    if wait > self.max_wait:
      raise CollectorError(f'Spotify rate limit: asked to wait {wait:.0f} s (more than '
                           f'--max_wait {self.max_wait:.0f} s); rerun the same command '
                           'later, finished requests are kept') from None
    self.log(f'Spotify API: rate limited (HTTP 429), waiting {wait:.0f} s')
    self.sleep(wait)

  def pages(self, method: str, *args: Any, limit: int, max_items: int, items_key: str | None = None,
            **kwargs: Any) -> Iterator[dict]:
    """Items of a paged endpoint by offset, up to max_items; survives smaller pages."""
    offset = 0
    while offset < max_items:
      try:
        page = self.call(method, *args, limit=min(limit, max_items - offset), offset=offset,
                         **kwargs)
      except spotipy.SpotifyException as e:
        if e.http_status == 400 and limit > SMALL_PAGE and 'limit' in str(e.msg).lower():
          limit = SMALL_PAGE  # a development-mode app asked for more than it may
          self.notice('small_pages', limit=SMALL_PAGE)
          continue
        raise
      if page is None:
        return
      if items_key:
        page = page.get(items_key) or {}
      items = page.get('items') or []
      got_limit = page.get('limit')
      if got_limit is not None and got_limit < min(limit, max_items - offset):
        self.notice('small_pages', limit=got_limit)
      for item in items:
        if item is not None:  # Spotify returns null entries for removed items
          yield item
      if not items or not page.get('next'):
        return
      offset += len(items)

  def close(self) -> None:
    self.db.close()


# ---------------------------------------------------------------- rows

def _track_row(track: dict, genre: str, playlist: str = '') -> dict[str, Any]:
  artists = [a for a in track.get('artists') or [] if a and a.get('id')]
  preview = track.get('preview_url') or ''
  row = {c: '' for c in COLUMNS}
  row.update({
      'id': track['id'], 'name': track.get('name', ''),
      'artists': ';'.join(a.get('name', '') for a in artists),
      'artist_id': artists[0]['id'] if artists else '',
      'album_id': (track.get('album') or {}).get('id', ''), 'playlist': playlist, 'genre': genre,
      'preview_url': preview, 'has_preview': int(bool(preview)),
      'duration_ms': track.get('duration_ms', ''),
      'explicit': '' if track.get('explicit') is None else bool(track['explicit']),
  })
  if 'popularity' in track:
    row['popularity'] = track['popularity']
  return row


def _artist_tags(api: Api, artist_ids: Sequence[str]) -> dict[str, dict]:
  """artist id -> artist object, fetched 50 at a time."""
  out: dict[str, dict] = {}
  ids = list(dict.fromkeys(a for a in artist_ids if a))
  for i in range(0, len(ids), 50):
    resp = api.call('artists', ids[i:i + 50]) or {}
    for a in resp.get('artists') or []:
      if a:
        out[a['id']] = a
  return out


def _playlist_tracks(api: Api, playlist_id: str, max_items: int) -> Iterator[dict]:
  for item in api.pages('playlist_items', playlist_id, limit=50, max_items=max_items,
                        additional_types=('track',)):
    track = item.get('track') or item.get('item')
    if track and track.get('id') and track.get('type', 'track') == 'track':
      yield track


def collect_playlists(api: Api, genres: Sequence[str], playlists_per_genre: int = 100,
                      tracks_per_playlist: int = 10_000) -> list[dict[str, Any]]:
  """The genres strategy: tracks labelled by the genre word that found their playlist."""
  rows: dict[str, dict[str, Any]] = {}
  for genre in genres:
    for pl in api.pages('search', q=genre, type='playlist', limit=50,
                        max_items=playlists_per_genre, items_key='playlists'):
      for track in _playlist_tracks(api, pl['id'], tracks_per_playlist):
        rows[track['id']] = _track_row(track, genre, pl.get('name', ''))  # last genre wins
  tags = _artist_tags(api, [r['artist_id'] for r in rows.values()])
  for r in rows.values():
    r['artist_genres'] = ';'.join((tags.get(r['artist_id']) or {}).get('genres') or [])
  return list(rows.values())


def find_artists(api: Api, genre: str, labelled: dict[str, str], seed_playlists: int = 3,
                 miss_limit: int = 50, max_search_items: int = 1000) -> list[str]:
  """Artists newly labelled with ``genre`` (exact tag, first tag wins), in the order found."""
  added: list[str] = []
  seen: set[str] = set()
  seeds: list[str] = []
  for pl in api.pages('search', q=genre, type='playlist', limit=50, max_items=seed_playlists,
                      items_key='playlists'):
    for track in _playlist_tracks(api, pl['id'], 10_000):
      seeds.extend(a['id'] for a in track.get('artists') or [] if a and a.get('id'))
  seeds = list(dict.fromkeys(seeds))
  objects = _artist_tags(api, seeds)

  def take(artist: dict) -> bool:
    if genre in (artist.get('genres') or []) and artist['id'] not in labelled:
      labelled[artist['id']] = genre
      added.append(artist['id'])
      return True
    return False

  for sid in seeds:
    seen.add(sid)
    if sid not in objects or not take(objects[sid]):
      continue
    stack, misses = [sid], 0
    while stack and misses < miss_limit:
      related = api.call('artist_related_artists', stack.pop())
      if related is None:  # refused: fall back to the genre-tag search below
        break
      for r in related.get('artists') or []:
        if not r or r['id'] in seen:
          continue
        seen.add(r['id'])
        if take(r):
          misses = 0
          stack.append(r['id'])
        else:
          misses += 1
          if misses >= miss_limit:
            break
  if 'artist_related_artists' in api.refused:
    misses = 0
    for artist in api.pages('search', q=f'genre:"{genre}"', type='artist', limit=50,
                            max_items=max_search_items, items_key='artists'):
      if artist['id'] in seen:
        continue
      seen.add(artist['id'])
      if take(artist):
        misses = 0
      else:
        misses += 1
        if misses >= miss_limit:
          break
  return added


def artist_tracks(api: Api, artist_id: str, genre: str, seed: int, albums_considered: int = 10,
                  albums_sampled: int = 5) -> list[dict[str, Any]]:
  """Tracks of ``albums_sampled`` of the artist's first ``albums_considered`` albums.

  The sample is seeded per artist (seed, artist id), so it does not depend on
  the order artists are visited in: a resumed run picks the same albums.
  """
  albums = list(api.pages('artist_albums', artist_id, include_groups='album', limit=50,
                          max_items=albums_considered))
  rng = random.Random(f'{seed}:{artist_id}')
  chosen = rng.sample(albums, min(albums_sampled, len(albums)))
  rows = []
  for album in chosen:
    for t in api.pages('album_tracks', album['id'], limit=50, max_items=1000):
      if artist_id in {a.get('id') for a in t.get('artists') or [] if a}:
        t = dict(t, album={'id': album['id']})
        rows.append(_track_row(t, genre))
  return rows


def add_track_details(api: Api, rows: list[dict[str, Any]]) -> None:
  """Popularity (full track objects), audio features, number of sections."""
  by_id = {r['id']: r for r in rows}
  ids = list(by_id)
  for i in range(0, len(ids), 50):
    resp = api.call('tracks', ids[i:i + 50]) or {}
    full = [t for t in resp.get('tracks') or [] if t]
    if full and all('popularity' not in t for t in full):
      api.notice('no_popularity')
      break
    for t in full:
      by_id[t['id']]['popularity'] = t.get('popularity', '')
  for i in range(0, len(ids), 100):
    feats = api.call('audio_features', ids[i:i + 100])
    if feats is None:
      break
    for f in feats or []:
      if f and f.get('id') in by_id:
        by_id[f['id']].update({c: f.get(c, '') for c in FEATURE_COLUMNS})
  for tid in ids:
    analysis = api.call('audio_analysis', tid)
    if analysis is None:
      break
    by_id[tid]['num_sections'] = len(analysis.get('sections') or [])


def collect_artists(api: Api, genres: Sequence[str], seed: int = 42,
                    seed_playlists: int = 3, miss_limit: int = 50, albums_considered: int = 10,
                    albums_sampled: int = 5, max_search_items: int = 1000
                    ) -> list[dict[str, Any]]:
  """The metal strategy: artists labelled by their exact genre tag, then their tracks."""
  labelled: dict[str, str] = {}
  for genre in genres:
    find_artists(api, genre, labelled, seed_playlists, miss_limit, max_search_items)
  tags = _artist_tags(api, list(labelled))
  rows: dict[str, dict[str, Any]] = {}
  for artist_id, genre in labelled.items():
    for r in artist_tracks(api, artist_id, genre, seed, albums_considered, albums_sampled):
      r['artist_id'] = artist_id
      r['artist_genres'] = ';'.join((tags.get(artist_id) or {}).get('genres') or [])
      rows.setdefault(r['id'], r)
  add_track_details(api, list(rows.values()))
  return list(rows.values())


# ---------------------------------------------------------------- previews, table

def preview_path(track_id: str) -> str:
  """Where a preview goes, relative to the output folder: previews/<id[0:2]>/<id>.mp3."""
  return os.path.join('previews', track_id[:2], track_id + '.mp3')


def download_previews(rows: list[dict[str, Any]], out_dir: str, session: Any,
                      sleep: Callable[[float], None] = time.sleep, max_retries: int = 5,
                      progress: bool = True) -> dict[str, int]:
  """Fetches missing previews (atomic writes; present files are skipped)."""
  counts = {'downloaded': 0, 'present': 0, 'failed': 0, 'no_preview': 0}
  for r in tqdm(rows, desc='previews', unit='file', disable=not progress, file=sys.stderr):
    if not r.get('preview_url'):
      counts['no_preview'] += 1
      continue
    rel = preview_path(r['id'])
    path = os.path.join(out_dir, rel)
    if os.path.exists(path) and os.path.getsize(path) > 0:
      counts['present'] += 1
      r['path'] = rel
      continue
    for attempt in range(max_retries + 1):
      try:
        resp = session.get(r['preview_url'], timeout=30)
      except Exception:  # noqa: BLE001  network trouble: back off, then give up on this file
        resp = None
      if resp is not None and resp.status_code == 429 and attempt < max_retries:
        sleep(min(retry_wait(resp.headers.get('Retry-After'), attempt), MAX_PREVIEW_WAIT))
        continue
      if resp is not None and resp.status_code == 200 and resp.content:
        with files.atomic_write(path, 'wb') as f:
          f.write(resp.content)
        counts['downloaded'] += 1
        r['path'] = rel
        break
      if resp is None and attempt < max_retries:
        sleep(2.0 ** attempt)
        continue
      counts['failed'] += 1
      break
  return counts


def write_table(rows: list[dict[str, Any]], path: str) -> None:
  rows = sorted(rows, key=lambda r: r['id'])
  with files.atomic_write(path, newline='', encoding='utf-8') as f:
    w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
    w.writeheader()
    w.writerows(rows)


def make_client(session: Any = None) -> Any:
  """spotipy with client credentials from the environment; token kept in memory only."""
  if not (os.environ.get('SPOTIPY_CLIENT_ID') and os.environ.get('SPOTIPY_CLIENT_SECRET')):
    raise CollectorError('set SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET (a Spotify app\'s '
                         'client credentials) in the environment')
  session = session or requests.Session()  # no urllib3 retries: Api handles 429 itself
  auth = spotipy.SpotifyClientCredentials(requests_session=session,
                                          cache_handler=MemoryCacheHandler())
  return spotipy.Spotify(auth_manager=auth, requests_session=session, requests_timeout=20)


def collect(strategy: str, out_dir: str, *, genres: Sequence[str] | None = None, seed: int = 42,
            playlists_per_genre: int = 100, tracks_per_playlist: int = 10_000,
            seed_playlists: int = 3, miss_limit: int = 50, max_search_items: int = 1000,
            previews: bool = True, require_preview: bool = False, session: Any = None,
            sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] = print,
            max_wait: float = 3600.0, progress: bool = True) -> dict[str, Any]:
  """Runs one strategy into out_dir; returns a summary. Resumable through the cache."""
  if strategy not in ('playlists', 'artists'):
    raise ValueError(f"strategy must be 'playlists' or 'artists', got {strategy!r}")
  # spotipy logs every refused request at ERROR level (URL and all): the one-line
  # notices below replace that noise.
  logging.getLogger('spotipy').setLevel(logging.CRITICAL)
  session = session or requests.Session()
  client = make_client(session)  # fails on missing credentials before anything is written
  os.makedirs(out_dir, exist_ok=True)
  api = Api(client, os.path.join(out_dir, 'spotify_cache.sqlite'), sleep=sleep, log=log,
            max_wait=max_wait)
  try:
    if strategy == 'playlists':
      rows = collect_playlists(api, genres or labels.GENRE_QUERIES, playlists_per_genre,
                               tracks_per_playlist)
    else:
      rows = collect_artists(api, genres or labels.METAL_QUERY_GENRES, seed, seed_playlists,
                             miss_limit, max_search_items=max_search_items)
  finally:
    api.close()
  if rows and not any(r['has_preview'] for r in rows):
    api.notice('no_previews')
  if require_preview:
    rows = [r for r in rows if r['has_preview']]
  downloads = (download_previews(rows, out_dir, session, sleep, progress=progress)
               if previews else {})
  table = os.path.join(out_dir, 'tracks.csv')
  write_table(rows, table)
  summary = {'tracks': len(rows), 'with_preview': sum(1 for r in rows if r['has_preview']),
             'labels': dict(sorted(_count(r['genre'] for r in rows).items())),
             'refused': sorted(api.refused), 'notices': sorted(api.notified),
             'requests': api.calls, 'previews': downloads, 'table': table}
  log(f"wrote {table}: {summary['tracks']} tracks ({summary['with_preview']} with a preview), "
      f"{summary['requests']} API requests; labels: "
      + ', '.join(f'{k} {v}' for k, v in summary['labels'].items()))
  return summary


def _count(values: Iterator[str]) -> dict[str, int]:
  out: dict[str, int] = {}
  for v in values:
    out[v] = out.get(v, 0) + 1
  return out


# ---------------------------------------------------------------- CLI

def add_command(commands: Any) -> None:
  p = commands.add_parser(
      'spotify', help='collect a track table and previews from the Spotify Web API',
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--strategy', choices=('playlists', 'artists'), required=True,
                 help="'playlists': genres set (playlists as labels); 'artists': metal set "
                 '(artist genres as labels)')
  p.add_argument('--out', required=True, help='output folder (tracks.csv, previews/, cache)')
  p.add_argument('--genres', default='', help='comma-separated query words/tags (default: the '
                 "reference's 10 genre words or 32 metal tags)")
  p.add_argument('--seed', type=int, default=42, help='album sampling seed')
  p.add_argument('--playlists_per_genre', type=int, default=100)
  p.add_argument('--tracks_per_playlist', type=int, default=10_000)
  p.add_argument('--seed_playlists', type=int, default=3)
  p.add_argument('--miss_limit', type=int, default=50,
                 help='stop an artist walk after this many consecutive artists not added')
  p.add_argument('--max_search_items', type=int, default=1000,
                 help='artists read per tag when related-artists is refused')
  p.add_argument('--no_previews', action='store_true', help='do not download previews')
  p.add_argument('--require_preview', action='store_true',
                 help='drop tracks without a preview URL (the reference)')
  p.add_argument('--max_wait', type=float, default=3600.0,
                 help='longest Retry-After to sleep through (s); longer stops the run')
  p.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
  try:
    collect(args.strategy, args.out,
            genres=[g.strip() for g in args.genres.split(',') if g.strip()] or None,
            seed=args.seed, playlists_per_genre=args.playlists_per_genre,
            tracks_per_playlist=args.tracks_per_playlist, seed_playlists=args.seed_playlists,
            miss_limit=args.miss_limit, max_search_items=args.max_search_items,
            previews=not args.no_previews, require_preview=args.require_preview,
            max_wait=args.max_wait)
  except (CollectorError, ValueError, OSError) as e:  # requests' errors are OSErrors
    print(f'error: {e}', file=sys.stderr)
    return 2
  except Exception as e:  # spotipy's other errors: one line, not a traceback
    if not isinstance(e, spotipy.exceptions.SpotifyBaseException):
      raise
    print(f'error: Spotify: {str(e).splitlines()[-1][:300] if str(e) else type(e).__name__}; '
          'rerun the same command later (finished requests are kept)', file=sys.stderr)
    return 2
  return 0
