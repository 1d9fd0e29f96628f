"""``python -m data_prep spotify``: collect a track table from the Spotify Web API.

  --strategy=playlists  "playlists as labels" (the genres set): the playlists a
                        search by each genre word finds, every track of each,
                        labelled with the word (the last word that meets a
                        track wins, as in the reference).
  --strategy=artists    "artist genres as labels" (the metal set): artists whose
                        Spotify genres hold the exact tag (first tag wins), found
                        through playlists and related artists as the reference,
                        or by a genre search where those are refused; 5 of each
                        artist's first 10 albums; their tracks.

Works with the API of every era: an extended-quota app (2020), a new app since
2024-11-27, a development-mode app since 2026-02-11. Each refused endpoint is
reported once, with what is done instead, and listed in OUT/spotify_report.csv
with every skipped playlist and every genre that found no artist.

Output in --out: tracks.csv (read it with `python -m data_prep build
--input=OUT/tracks.csv --preset=spotify`), previews/ where the API still gives
preview URLs (else fill the path column with `python -m data_prep match`),
spotify_report.csv, and spotify_cache.sqlite (every answer and refusal: rerun
the same command to continue after a stop; --retry_refused asks refusals again).

Credentials: SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET in the environment
(--auth=user: SPOTIPY_CLIENT_ID and SPOTIPY_REDIRECT_URI, default
http://127.0.0.1:8888/callback, registered in the app's dashboard). They and the
token stay in memory: nothing secret is written or printed.

Watch a run against a local fake of the API (no account needed):
  python -m data_prep.testing.fake_spotify --era=2026 --port=8765 &
  SPOTIPY_CLIENT_ID=fake-id SPOTIPY_CLIENT_SECRET=fake-secret python -m data_prep \\
      spotify --strategy=artists --out=/tmp/fake_metal --api_url=http://127.0.0.1:8765
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import spotipy

from data_prep.spotify.artists import Settings
from data_prep.spotify.collector import AUTHS, PLAYLIST_SOURCES, STRATEGIES, Options, collect
from data_prep.spotify.errors import CollectorError, one_line


def add_command(commands: Any) -> None:
  p = commands.add_parser(
      'spotify', help='collect a track table (and previews) from the Spotify Web API',
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--strategy', choices=STRATEGIES, required=True,
                 help="'playlists': genres set (playlists as labels); 'artists': metal set "
                 '(artist genres as labels)')
  p.add_argument('--out', required=True, help='output folder (tracks.csv, report, cache)')
  p.add_argument('--genres', default='', help='comma-separated query words/tags (default: the '
                 "reference's 10 genre words or 32 metal tags)")
  p.add_argument('--auth', choices=AUTHS, default='client',
                 help="'client': client credentials (the catalogue); 'user': log in (PKCE) to "
                 'read your own playlists too')
  p.add_argument('--playlists_from', choices=PLAYLIST_SOURCES, default='search',
                 help="playlists strategy: 'search' (the reference) or 'mine' (your playlists "
                 'whose names hold a genre word; needs --auth=user)')
  p.add_argument('--seed', type=int, default=42, help='album sampling seed')
  p.add_argument('--playlists_per_genre', type=int, default=100)
  p.add_argument('--tracks_per_playlist', type=int, default=10_000)
  p.add_argument('--seed_playlists', type=int, default=3)
  p.add_argument('--miss_limit', type=int, default=50,
                 help='stop an artist walk or search after this many consecutive misses')
  p.add_argument('--max_search_items', type=int, default=1000,
                 help='artists read per tag by the genre search')
  p.add_argument('--no_previews', action='store_true', help='do not download previews')
  p.add_argument('--require_preview', action='store_true',
                 help='drop tracks without a preview URL (the reference)')
  p.add_argument('--max_wait', type=float, default=3600.0,
                 help='longest Retry-After to sleep through (s); longer stops the run')
  p.add_argument('--retry_refused', action='store_true',
                 help='ask again what earlier runs were refused (cached refusals forgotten)')
  p.add_argument('--no_browser', action='store_true',
                 help='--auth=user: print the login URL instead of opening a browser')
  p.add_argument('--api_url', default='', help='another Web API base URL, e.g. the local '
                 'fake of `python -m data_prep.testing.fake_spotify`')
  p.add_argument('--no_progress', action='store_true', help='no progress bars')
  p.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
  settings = Settings(seed=args.seed, seed_playlists=args.seed_playlists,
                      miss_limit=args.miss_limit, max_search_items=args.max_search_items)
  options = Options(
      genres=[g.strip() for g in args.genres.split(',') if g.strip()] or None,
      artists=settings, playlists_per_genre=args.playlists_per_genre,
      tracks_per_playlist=args.tracks_per_playlist, playlists_from=args.playlists_from,
      auth=args.auth, api_url=args.api_url, open_browser=not args.no_browser,
      retry_refused=args.retry_refused, previews=not args.no_previews,
      require_preview=args.require_preview, max_wait=args.max_wait,
      progress=not args.no_progress)
  try:
    collect(args.strategy, args.out, options)
  except (CollectorError, ValueError, OSError) as e:  # requests' errors are OSErrors
    print(f'error: {one_line(e, 400)}', file=sys.stderr)
    return 2
  except spotipy.exceptions.SpotifyBaseException as e:  # anything else spotipy raises
    print(f'error: Spotify: {one_line(e, 300) or type(e).__name__}; rerun the same command '
          'later (finished requests are kept)', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print('interrupted: rerun the same command to continue (finished requests are kept)',
          file=sys.stderr)
    return 130
  return 0
