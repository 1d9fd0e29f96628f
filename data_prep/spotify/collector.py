"""One collection run: credentials -> client -> strategy -> previews -> table.

Everything asked is kept in ``OUT/spotify_cache.sqlite`` (answers and
refusals), so rerunning the same command after a crash, Ctrl-C, a rate-limit
stop or a lapsed Premium subscription continues where it stopped. Credentials
come from the environment variables spotipy reads; the token stays in memory
and nothing secret is written or printed.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests
import spotipy
from spotipy.cache_handler import MemoryCacheHandler

from crnn_jax.core import labels
from data_prep.cache import AnswerCache
from data_prep.spotify.artists import Settings, collect_artists
from data_prep.spotify.catalog import Catalog
from data_prep.spotify.client import Client
from data_prep.spotify.errors import CollectorError
from data_prep.spotify.playlists import collect_playlists
from data_prep.spotify.previews import download_previews
from data_prep.spotify.table import Report, write_table

STRATEGIES = ('playlists', 'artists')
AUTHS = ('client', 'user')
PLAYLIST_SOURCES = ('search', 'mine')
USER_SCOPE = 'playlist-read-private playlist-read-collaborative'
DEFAULT_REDIRECT_URI = 'http://127.0.0.1:8888/callback'
CACHE_FILE = 'spotify_cache.sqlite'


@dataclasses.dataclass(frozen=True)
class Options:
  """How a run collects; ``collect``'s keyword arguments.

  genres: query words (playlists) or tags (artists); default the reference's.
  auth: 'client' (client credentials: the catalogue) or 'user' (a login with
    PKCE: also the user's own playlists, which development mode still serves).
  playlists_from: 'search' (the reference) or 'mine' (the user's playlists).
  api_url: another Web API base URL (data_prep.testing.fake_spotify).
  retry_refused: forget cached refusals and ask again.
  max_wait: longest Retry-After slept through; longer stops the run.
  """
  genres: Sequence[str] | None = None
  artists: Settings = dataclasses.field(default_factory=Settings)
  playlists_per_genre: int = 100
  tracks_per_playlist: int = 10_000
  playlists_from: str = 'search'
  auth: str = 'client'
  api_url: str = ''
  open_browser: bool = True
  retry_refused: bool = False
  previews: bool = True
  require_preview: bool = False
  max_wait: float = 3600.0
  progress: bool = True
  session: requests.Session | None = None
  sleep: Callable[[float], None] = time.sleep
  log: Callable[[str], None] = print


def check(strategy: str, opts: Options) -> None:
  """Settings that cannot work, refused before anything is asked or written."""
  for value, allowed, what in ((strategy, STRATEGIES, 'strategy'), (opts.auth, AUTHS, 'auth'),
                               (opts.playlists_from, PLAYLIST_SOURCES, 'playlists_from')):
    if value not in allowed:
      raise ValueError(f'{what} must be one of {allowed}, got {value!r}')
  if opts.playlists_from == 'mine' and opts.auth != 'user':
    raise CollectorError('--playlists_from=mine reads your own playlists, which needs user '
                         'authorisation: add --auth=user (and SPOTIPY_REDIRECT_URI, registered '
                         'in the app\'s Developer Dashboard)')


def make_client(auth: str = 'client', api_url: str = '', session: requests.Session | None = None,
                open_browser: bool = True) -> spotipy.Spotify:
  """spotipy with credentials from the environment; the token kept in memory only."""
  client_id = os.environ.get('SPOTIPY_CLIENT_ID')
  secret = os.environ.get('SPOTIPY_CLIENT_SECRET')
  if not client_id or (auth == 'client' and not secret):
    raise CollectorError("set SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET (a Spotify app's "
                         'client credentials) in the environment')
  session = session or requests.Session()  # no urllib3 retries: Client handles 429 itself
  if auth == 'client':
    manager: Any = spotipy.SpotifyClientCredentials(client_id, secret, requests_session=session,
                                                    cache_handler=MemoryCacheHandler())
  else:
    manager = spotipy.SpotifyPKCE(client_id, os.environ.get('SPOTIPY_REDIRECT_URI')
                                  or DEFAULT_REDIRECT_URI, scope=USER_SCOPE,
                                  cache_handler=MemoryCacheHandler(), open_browser=open_browser,
                                  requests_session=session)
  sp = spotipy.Spotify(auth_manager=manager, requests_session=session, requests_timeout=20)
  if api_url:
    base = api_url.rstrip('/')
    manager.OAUTH_TOKEN_URL = base + '/api/token'
    manager.OAUTH_AUTHORIZE_URL = base + '/authorize'
    sp.prefix = base + '/v1/'
  return sp


def log_in(sp: spotipy.Spotify) -> None:
  """The user login (--auth=user), before any collection."""
  try:
    sp.auth_manager.get_access_token()
  except EOFError:
    raise CollectorError('--auth=user needs the login: open the printed URL, log in, and '
                         'paste the address you are sent to') from None
  except spotipy.oauth2.SpotifyOauthError as e:
    raise CollectorError(f'Spotify login failed ({e.error or ""}: '
                         f'{e.error_description or e}); check SPOTIPY_REDIRECT_URI against the '
                         "app's Developer Dashboard") from None


def collect(strategy: str, out_dir: str, options: Options | None = None,
            **overrides: Any) -> dict[str, Any]:
  """Runs one strategy into out_dir; returns a summary. Resumable through the cache.

  ``overrides`` are Options fields (``genres=[...], progress=False``).
  """
  opts = dataclasses.replace(options or Options(), **overrides)
  check(strategy, opts)
  # spotipy logs every refused request at ERROR level (URL and all): the
  # one-line notices replace that noise.
  logging.getLogger('spotipy').setLevel(logging.CRITICAL)
  session = opts.session or requests.Session()
  sp = make_client(opts.auth, opts.api_url, session, opts.open_browser)
  os.makedirs(out_dir, exist_ok=True)  # only now: bad credentials leave nothing behind
  cache = AnswerCache(os.path.join(out_dir, CACHE_FILE))
  if opts.retry_refused:
    opts.log(f'forgot {cache.forget_refusals()} cached refusals: asking again')
  client = Client(sp, cache, auth=opts.auth, sleep=opts.sleep, log=opts.log,
                  max_wait=opts.max_wait)
  report = Report()
  try:
    if opts.auth == 'user':
      log_in(sp)
    rows = _run_strategy(strategy, Catalog(client, report, opts.progress), opts)
  except BaseException:  # a stop or Ctrl-C: what was skipped so far is still reported
    _write_report(report, client, out_dir)
    raise
  finally:
    client.close()
  return _finish(rows, out_dir, client, report, session, opts)


def _run_strategy(strategy: str, catalog: Catalog, opts: Options) -> list[dict[str, Any]]:
  if strategy == 'playlists':
    return collect_playlists(catalog, opts.genres or labels.GENRE_QUERIES,
                             opts.playlists_per_genre, opts.tracks_per_playlist,
                             opts.playlists_from, opts.progress)
  return collect_artists(catalog, opts.genres or labels.METAL_QUERY_GENRES, opts.artists,
                         opts.progress)


def _finish(rows: list[dict[str, Any]], out_dir: str, client: Client, report: Report,
            session: requests.Session, opts: Options) -> dict[str, Any]:
  """Previews, the table and the summary line."""
  if rows and not any(r['has_preview'] for r in rows):
    client.say_once('no_previews', 'preview URLs are null (apps created since 2024-11-27): '
                    'tracks kept without previews (has_preview 0); give them local audio with '
                    '`python -m data_prep match`')
  if opts.require_preview:
    rows = [r for r in rows if r['has_preview']]
  downloads = (download_previews(rows, out_dir, session, opts.sleep, progress=opts.progress)
               if opts.previews else {})
  table = os.path.join(out_dir, 'tracks.csv')
  write_table(rows, table)
  skipped = len(report.rows)
  report_path = _write_report(report, client, out_dir)
  label_counts = collections.Counter(r['genre'] for r in rows)
  summary = {'tracks': len(rows), 'with_preview': sum(1 for r in rows if r['has_preview']),
             'labels': dict(sorted(label_counts.items())),
             'refused': sorted(k.removeprefix('refused:') for k in client.notices
                               if k.startswith('refused:')),
             'notices': sorted(client.notices), 'requests': client.requests,
             'skipped': skipped, 'previews': downloads, 'table': table,
             'report': report_path}
  opts.log(f"wrote {table}: {summary['tracks']} tracks ({summary['with_preview']} with a "
           f"preview), {summary['requests']} API requests; labels: "
           + (', '.join(f'{k} {v}' for k, v in summary['labels'].items()) or 'none')
           + f"; report: {summary['report']}")
  return summary


def _write_report(report: Report, client: Client, out_dir: str) -> str:
  """spotify_report.csv: the skipped items, then every fact said about the API."""
  for key, text in client.notices.items():
    report.add('api', key, '', text)
  path = os.path.join(out_dir, 'spotify_report.csv')
  report.write(path)
  return path
