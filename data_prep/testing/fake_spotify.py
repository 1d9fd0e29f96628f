"""A local fake of the Spotify Web API, in each era of it, for tests and demos.

  python -m data_prep.testing.fake_spotify --era=2026 --port=8765 [--library=DIR]

serves, over real HTTP on 127.0.0.1, the accounts service (``/api/token``,
``/authorize``) and the Web API (``/v1/...``) as an app sees them:

  2020     extended quota: everything the reference used (search pages up to
           50, batch lookups, audio features and analysis, related artists,
           artist albums, previews, popularity; playlist ``/tracks``);
  2024-11  an app created after 2024-11-27: audio features 403 (JSON),
           audio analysis 403 with an empty body, related artists and
           recommendations 404 ``Not Found``, null preview URLs, Spotify's
           editorial playlists 404;
  2026     development mode after 2026-02-11 (the migration guide): also
           batch ``/tracks``, ``/artists``, ``/albums``, top tracks, browse,
           ``/users/{id}/playlists`` 403; ``/playlists/{id}/tracks`` 403
           (renamed ``/items``, served only for playlists the logged-in user
           owns or collaborates on, else 403; at most 50 a page); search
           ``limit`` above 10 -> 400 ``Invalid limit`` (default 5); track
           ``popularity``/``available_markets``/``linked_from`` and artist
           ``popularity``/``followers`` removed; playlist ``tracks`` ->
           ``items`` (the old key kept as an alias).

Switches: ``premium=False`` (every ``/v1`` call answers Spotify's 159-byte
plain-text 403 while tokens are still issued; ``premium_json=True``: the JSON
form one project reported instead), ``artist_albums='served'``
(2026: the changelog lists GET /artists/{id}/albums as kept, max 10 a page;
the default 'refused' follows reports that it is gone), ``search_offset_cap``
(1,000, from the older documentation; unverified for 2026). Faults, for any
era: ``rate_limit`` (429 with Retry-After), ``fail`` (5xx bursts or an
outage), ``token_ttl`` (tokens expire early: 401 ``The access token
expired``). Bodies follow Spotify's shapes: ``{"error": {"status", "message"}}``
for the API, OAuth's ``{"error", "error_description"}`` for the accounts
service. Unverified details are marked where they are modelled.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import re
import secrets
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from data_prep.testing import spotify_catalogue
from data_prep.testing.server import LocalServer, Response
from data_prep.testing.spotify_catalogue import EDITORIAL, Catalogue
from data_prep.testing.spotify_objects import Shapes, features, preview

ERAS = ('2020', '2024-11', '2026')
PREMIUM_TEXT = ('Active premium subscription required for the owner of the app. When the '
                'subscription status changes, it can take a few hours before requests are '
                'allowed again.')
NOT_REGISTERED = 'User not registered in the Developer Dashboard'
SEARCH_TYPES = ('artist', 'track', 'playlist', 'album')


def error(status: int, message: str) -> Response:
  return json_response(status, {'error': {'status': status, 'message': message}})


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
  return status, {'Content-Type': 'application/json', **(headers or {})}, json.dumps(body).encode()


FORBIDDEN = error(403, 'Forbidden')  # removed endpoints (2026); exact production body unverified
NOT_FOUND = error(404, 'Not Found')  # related artists, recommendations (2024-11)
NO_SERVICE = error(404, 'Service not found')  # a path this era's API does not have


@dataclasses.dataclass
class Fault:
  """Injected trouble: the next ``times`` answers to paths starting with
  ``prefix``, once ``after`` such requests have been served."""
  prefix: str
  response: Response
  times: int = 1
  after: int = 0


@dataclasses.dataclass
class Token:
  user: str | None  # None: client credentials
  uses_left: int | None  # requests before it expires early (None: never)


@dataclasses.dataclass
class Request:
  method: str
  path: str
  query: dict[str, str]
  user: str | None


class FakeSpotify(LocalServer):
  """The API of one era, served on 127.0.0.1 from a catalogue."""

  def __init__(self, era: str = '2026', catalogue: Catalogue | None = None, *,
               client_id: str = 'fake-id', client_secret: str = 'fake-secret',
               user: str = 'fake_user', registered_users: tuple[str, ...] = ('fake_user',),
               redirect_uris: tuple[str, ...] = ('http://127.0.0.1:8888/callback',),
               premium: bool = True, premium_json: bool = False, artist_albums: str = 'refused',
               search_offset_cap: int = 1000, token_ttl: int | None = None):
    if era not in ERAS:
      raise ValueError(f'era must be one of {ERAS}, got {era!r}')
    self.era = era
    self.cat = catalogue or spotify_catalogue.tiny_catalogue()
    self.client_id, self.client_secret = client_id, client_secret
    self.user, self.registered_users, self.redirect_uris = user, registered_users, redirect_uris
    self.premium, self.premium_json = premium, premium_json
    self.artist_albums = artist_albums
    self.search_offset_cap = search_offset_cap
    self.token_ttl = token_ttl
    self.requests: list[Request] = []  # every /v1 request, in order
    self.faults: list[Fault] = []
    self.tokens: dict[str, Token] = {}
    self.codes: dict[str, str] = {}  # authorization code -> PKCE challenge
    self.lock = threading.Lock()

  @property
  def shapes(self) -> Shapes:
    """The era's JSON objects, with links to this server."""
    return Shapes(self.cat, self.era, self.url)

  # ------------------------------------------------------------ faults

  def rate_limit(self, prefix: str, retry_after: str | None = '1', times: int = 1,
                 flat: bool = False, after: int = 0) -> None:
    """429s; ``flat``: the July 2026 quota body without the 'error' wrapper (reported)."""
    body = ({'status': 429, 'message': 'Too many requests', 'reason': 'QUOTA_EXCEEDED'} if flat
            else {'error': {'status': 429, 'message': 'API rate limit exceeded'}})
    headers = {'Retry-After': retry_after} if retry_after is not None else {}
    self.faults.append(Fault(prefix, json_response(429, body, headers), times, after))

  def fail(self, prefix: str, status: int = 503, times: int = 1, after: int = 0) -> None:
    """Server errors: a burst (``times``), or an outage (a large ``times``)."""
    body = b'<html><body><h1>503 Service Unavailable</h1></body></html>'
    self.faults.append(Fault(prefix, (status, {'Content-Type': 'text/html'}, body), times, after))

  def _fault(self, path: str) -> Response | None:
    for fault in self.faults:
      if not path.startswith(fault.prefix) or fault.times <= 0:
        continue
      if fault.after > 0:
        fault.after -= 1
        continue
      fault.times -= 1
      return fault.response
    return None

  # ------------------------------------------------------------ dispatch

  def handle(self, method: str, url: str, headers: Any, body: bytes) -> Response:
    parsed = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
    path = parsed.path
    with self.lock:
      if path == '/api/token':
        return self._fault(path) or self._token(headers, dict(urllib.parse.parse_qsl(
            body.decode('utf-8', 'replace'))))
      if path == '/authorize':
        return self._authorize(query)
      if path.startswith('/previews/'):
        return self._fault(path) or (200, {'Content-Type': 'audio/mpeg'}, preview(path))
      token = self._bearer(headers)
      self.requests.append(Request(method, path, query, token.user if token else None))
      fault = self._fault(path)
      if fault:
        return fault
      refused = self._access(token)
      if refused:
        return refused
      return self._route(path.removeprefix('/v1/').rstrip('/'), query, token)

  def _bearer(self, headers: Any) -> Token | None:
    value = headers.get('Authorization', '')
    return self.tokens.get(value.removeprefix('Bearer ')) if value.startswith('Bearer ') else None

  def _access(self, token: Token | None) -> Response | None:
    if token is None:
      return error(401, 'Invalid access token')
    if token.uses_left is not None:
      if token.uses_left <= 0:
        return error(401, 'The access token expired')
      token.uses_left -= 1
    if not self.premium and self.premium_json:
      return error(403, PREMIUM_TEXT.split('.')[0])
    if not self.premium:  # plain text, exactly as reported (159 bytes)
      return 403, {'Content-Type': 'text/plain'}, PREMIUM_TEXT.encode()
    if token.user is not None and token.user not in self.registered_users:
      return error(403, NOT_REGISTERED)
    return None

  # ------------------------------------------------------------ accounts service

  def _token(self, headers: Any, form: dict[str, str]) -> Response:
    grant = form.get('grant_type')
    if grant == 'client_credentials':
      basic = headers.get('Authorization', '').removeprefix('Basic ')
      try:
        client_id, _, secret = base64.b64decode(basic).decode().partition(':')
      except ValueError:
        client_id, secret = '', ''
      if (client_id, secret) != (self.client_id, self.client_secret):
        return json_response(400, {'error': 'invalid_client', 'error_description':
                                   'Invalid client'})
      return self._issue(None)
    if form.get('client_id') != self.client_id:
      return json_response(400, {'error': 'invalid_client', 'error_description': 'Invalid client'})
    if grant == 'authorization_code':
      challenge = self.codes.pop(form.get('code', ''), None)
      verifier = form.get('code_verifier', '').encode()
      expected = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b'=').decode()
      if challenge is None or challenge != expected:
        return json_response(400, {'error': 'invalid_grant', 'error_description':
                                   'Invalid authorization code'})
      return self._issue(self.user, refresh=True)
    if grant == 'refresh_token':
      return self._issue(self.user, refresh=True)
    return json_response(400, {'error': 'unsupported_grant_type', 'error_description':
                               'grant_type must be client_credentials, authorization_code or '
                               'refresh_token'})

  def _issue(self, user: str | None, refresh: bool = False) -> Response:
    access = secrets.token_urlsafe(24)
    self.tokens[access] = Token(user, self.token_ttl)
    body = {'access_token': access, 'token_type': 'Bearer', 'expires_in': 3600}
    if refresh:
      body.update(refresh_token=secrets.token_urlsafe(24),
                  scope='playlist-read-private playlist-read-collaborative')
    return json_response(200, body)

  def _authorize(self, query: dict[str, str]) -> Response:
    """The login page, already logged in: redirects with a code (PKCE)."""
    if query.get('client_id') != self.client_id:
      return 400, {'Content-Type': 'text/plain'}, b'INVALID_CLIENT: Invalid client'
    if query.get('redirect_uri') not in self.redirect_uris:
      return 400, {'Content-Type': 'text/plain'}, b'INVALID_CLIENT: Invalid redirect URI'
    code = secrets.token_urlsafe(16)
    self.codes[code] = query.get('code_challenge', '')
    target = {'code': code, **({'state': query['state']} if 'state' in query else {})}
    location = f"{query['redirect_uri']}?{urllib.parse.urlencode(target)}"
    return 302, {'Location': location}, b''

  # ------------------------------------------------------------ the Web API

  def _route(self, path: str, query: dict[str, str], token: Token) -> Response:
    for pattern, name in ROUTES:
      match = re.fullmatch(pattern, path)
      if match:
        removed = self._removed(name)
        if removed:
          return removed
        return getattr(self, '_' + name)(*match.groups(), query=query, token=token)
    return NO_SERVICE

  def _removed(self, name: str) -> Response | None:
    """What this era answers instead of the endpoint, if it is gone."""
    if self.era == '2020':
      return NO_SERVICE if name == 'playlist_items' else None
    if name in ('audio_features', 'audio_features_one'):
      return FORBIDDEN
    if name == 'audio_analysis':  # 403 with an empty body (spotipy shows 'due to None')
      return 403, {'Content-Type': 'application/json'}, b''
    if name in ('related_artists', 'recommendations'):
      return NOT_FOUND
    if self.era == '2024-11':
      return NO_SERVICE if name == 'playlist_items' else None
    if name in ('artists', 'tracks', 'albums', 'top_tracks', 'browse', 'user_playlists',
                'playlist_tracks'):
      return FORBIDDEN
    if name == 'artist_albums' and self.artist_albums == 'refused':
      return FORBIDDEN
    return None

  def _limit(self, query: dict[str, str], default: int, maximum: int) -> int | Response:
    try:
      limit = int(query.get('limit', default))
    except ValueError:
      return error(400, 'Invalid limit')
    return limit if 1 <= limit <= maximum else error(400, 'Invalid limit')

  def _page(self, href: str, items: list, query: dict[str, str], default: int, maximum: int,
            offset_cap: int | None = None) -> dict | Response:
    limit = self._limit(query, default, maximum)
    if not isinstance(limit, int):
      return limit
    offset = int(query.get('offset', 0) or 0)
    if offset_cap is not None and offset + limit > offset_cap:
      return error(400, 'Invalid offset')  # the message is a guess: unverified
    end = offset + limit
    base = f'{self.url}/v1/{href}'
    sep = '&' if '?' in base else '?'
    return {'href': base, 'items': items[offset:end], 'limit': limit, 'offset': offset,
            'total': len(items), 'previous': None,
            'next': f'{base}{sep}offset={end}&limit={limit}' if end < len(items) else None}

  def _paged(self, href: str, items: list, query: dict[str, str], default: int, maximum: int,
             wrap: str | None = None, offset_cap: int | None = None) -> Response:
    page = self._page(href, items, query, default, maximum, offset_cap)
    if isinstance(page, tuple):
      return page
    return json_response(200, {wrap: page} if wrap else page)

  # search
  def _search(self, query: dict[str, str], token: Token) -> Response:
    kind, q = query.get('type', ''), query.get('q', '')
    if kind not in SEARCH_TYPES or not q:
      return error(400, 'Bad search type field' if q else 'No search query')
    items = getattr(self, f'_find_{kind}s')(q)
    default, maximum = (5, 10) if self.era == '2026' else (20, 50)
    href = f"search?{urllib.parse.urlencode({'q': q, 'type': kind})}"
    return self._paged(href, items, query, default, maximum, wrap=kind + 's',
                       offset_cap=self.search_offset_cap)

  def _find_artists(self, q: str) -> list[dict]:
    genre = re.fullmatch(r'genre:"(.*)"', q)
    return [self.shapes.artist(a.id) for a in self.cat.artists.values()
            if (genre.group(1) in a.genres if genre else q.lower() in a.name.lower())]

  def _find_tracks(self, q: str) -> list[dict]:
    by_artist = re.fullmatch(r'artist:"(.*)"', q)
    if by_artist:
      wanted = {a.id for a in self.cat.artists.values()
                if a.name.lower() == by_artist.group(1).lower()}
      return [self.shapes.track(t.id) for t in self.cat.tracks.values() if wanted & set(t.artists)]
    return [self.shapes.track(t.id) for t in self.cat.tracks.values() if q.lower() in t.name.lower()]

  def _find_albums(self, q: str) -> list[dict]:
    return [self.shapes.album(a.id) for a in self.cat.albums.values() if q.lower() in a.name.lower()]

  def _find_playlists(self, q: str) -> list[dict | None]:
    found: list[dict | None] = [self.shapes.playlist(p.id) for p in self.cat.playlists.values()
                                if q.lower() in p.name.lower()]
    if self.era != '2020' and found:
      found.insert(1, None)  # null entries appear in playlist search results (reported)
    return found

  # objects
  def _artists(self, query: dict[str, str], token: Token) -> Response:
    return self._batch(query, 50, 'artists', self.cat.artists, self.shapes.artist)

  def _tracks(self, query: dict[str, str], token: Token) -> Response:
    return self._batch(query, 50, 'tracks', self.cat.tracks, self.shapes.track)

  def _albums(self, query: dict[str, str], token: Token) -> Response:
    return self._batch(query, 20, 'albums', self.cat.albums, self.shapes.album)

  def _batch(self, query: dict[str, str], maximum: int, key: str, known: dict,
             make: Callable[[str], dict]) -> Response:
    ids = [i for i in query.get('ids', '').split(',') if i]
    if not ids or len(ids) > maximum:
      return error(400, 'Too many ids requested' if ids else 'invalid id')
    return json_response(200, {key: [make(i) if i in known else None for i in ids]})

  def _artist(self, artist_id: str, query: dict[str, str], token: Token) -> Response:
    return self._one(artist_id, self.cat.artists, self.shapes.artist)

  def _track(self, track_id: str, query: dict[str, str], token: Token) -> Response:
    return self._one(track_id, self.cat.tracks, self.shapes.track)

  def _album(self, album_id: str, query: dict[str, str], token: Token) -> Response:
    return self._one(album_id, self.cat.albums, self.shapes.album)

  def _one(self, item_id: str, known: dict, make: Callable[[str], dict]) -> Response:
    return json_response(200, make(item_id)) if item_id in known else error(404, 'Resource not found')

  def _related_artists(self, artist_id: str, query: dict[str, str], token: Token) -> Response:
    return json_response(200, {'artists': [self.shapes.artist(a)
                                           for a in self.cat.related.get(artist_id, [])]})

  def _artist_albums(self, artist_id: str, query: dict[str, str], token: Token) -> Response:
    groups = set((query.get('include_groups') or 'album,single,compilation').split(','))
    albums = [self.shapes.album(a.id, full=False) for a in self.cat.albums.values()
              if a.artist == artist_id and a.album_type in groups]
    maximum = 10 if self.era == '2026' else 50  # 2026: 'Default: 5. Maximum: 10' (reported)
    return self._paged(f'artists/{artist_id}/albums?include_groups=album', albums, query,
                       5 if self.era == '2026' else 20, maximum)

  def _album_tracks(self, album_id: str, query: dict[str, str], token: Token) -> Response:
    if album_id not in self.cat.albums:
      return error(404, 'Resource not found')
    items = [self.shapes.track(t, full=False) for t in self.cat.albums[album_id].tracks]
    return self._paged(f'albums/{album_id}/tracks', items, query, 20, 50)

  def _audio_features(self, query: dict[str, str], token: Token) -> Response:
    ids = [i for i in query.get('ids', '').split(',') if i]
    if len(ids) > 100:
      return error(400, 'Too many ids requested')
    return json_response(200, {'audio_features': [
        features(i) if i in self.cat.tracks else None for i in ids]})

  def _audio_features_one(self, track_id: str, query: dict[str, str], token: Token) -> Response:
    return json_response(200, features(track_id))

  def _audio_analysis(self, track_id: str, query: dict[str, str], token: Token) -> Response:
    sections = [{'start': 30.0 * k, 'duration': 30.0} for k in range(3 + len(track_id) % 4)]
    return json_response(200, {'sections': sections, 'track': {'tempo': 120.0}})

  def _recommendations(self, query: dict[str, str], token: Token) -> Response:
    return json_response(200, {'tracks': [], 'seeds': []})

  def _top_tracks(self, artist_id: str, query: dict[str, str], token: Token) -> Response:
    return json_response(200, {'tracks': [self.shapes.track(t)
                                          for t in self.cat.artist_tracks(artist_id)[:10]]})

  def _browse(self, rest: str, query: dict[str, str], token: Token) -> Response:
    return json_response(200, {'categories': {'items': [], 'total': 0}})

  def _user_playlists(self, user: str, query: dict[str, str], token: Token) -> Response:
    mine = [self.shapes.playlist(p.id) for p in self.cat.playlists.values() if p.owner == user]
    return self._paged(f'users/{user}/playlists', mine, query, 20, 50)

  # playlists
  def _playlist(self, playlist_id: str, query: dict[str, str], token: Token) -> Response:
    refused = self._playlist_refusal(playlist_id, token, items=False)
    return refused or json_response(200, self.shapes.playlist(playlist_id))

  def _playlist_tracks(self, playlist_id: str, query: dict[str, str], token: Token) -> Response:
    refused = self._playlist_refusal(playlist_id, token, items=False)
    entries = [] if refused else self._entries(playlist_id)
    return refused or self._paged(f'playlists/{playlist_id}/tracks', entries, query, 100, 100)

  def _playlist_items(self, playlist_id: str, query: dict[str, str], token: Token) -> Response:
    refused = self._playlist_refusal(playlist_id, token, items=True)
    entries = [] if refused else self._entries(playlist_id)
    return refused or self._paged(f'playlists/{playlist_id}/items', entries, query, 20, 50)

  def _playlist_refusal(self, playlist_id: str, token: Token, items: bool) -> Response | None:
    playlist = self.cat.playlists.get(playlist_id)
    if playlist is None or (playlist.owner == EDITORIAL and self.era != '2020'):
      return error(404, 'Not found.')
    if items and self.era == '2026' and not (playlist.owner == token.user
                                             or (playlist.collaborative and token.user)):
      return FORBIDDEN  # only the user's own or collaborative playlists (body unverified)
    return None

  def _entries(self, playlist_id: str) -> list[dict]:
    entries = []
    for tid in self.cat.playlists[playlist_id].tracks:
      track = self.shapes.track(tid)
      entry = {'added_at': '2020-01-01T00:00:00Z', 'added_by': {'id': 'someone'},
               'is_local': False, 'track': track}
      if self.era == '2026':
        entry['item'] = track  # 'track' stays as a deprecated alias
      entries.append(entry)
    return entries

  def _me(self, query: dict[str, str], token: Token) -> Response:
    if token.user is None:
      return error(401, 'Unauthorized.')  # no user behind a client-credentials token
    body = {'id': token.user, 'display_name': token.user, 'type': 'user'}
    if self.era != '2026':
      body.update(country='SE', product='premium', followers={'total': 0})
    return json_response(200, body)

  def _my_playlists(self, query: dict[str, str], token: Token) -> Response:
    if token.user is None:
      return error(401, 'Unauthorized.')
    mine = [self.shapes.playlist(p.id) for p in self.cat.playlists.values()
            if p.owner == token.user or p.collaborative]
    return self._paged('me/playlists', mine, query, 20, 50)

ROUTES: tuple[tuple[str, str], ...] = (
    (r'search', 'search'),
    (r'artists', 'artists'), (r'tracks', 'tracks'), (r'albums', 'albums'),
    (r'artists/([^/]+)', 'artist'), (r'tracks/([^/]+)', 'track'), (r'albums/([^/]+)', 'album'),
    (r'artists/([^/]+)/related-artists', 'related_artists'),
    (r'artists/([^/]+)/albums', 'artist_albums'), (r'artists/([^/]+)/top-tracks', 'top_tracks'),
    (r'albums/([^/]+)/tracks', 'album_tracks'),
    (r'audio-features', 'audio_features'), (r'audio-features/([^/]+)', 'audio_features_one'),
    (r'audio-analysis/([^/]+)', 'audio_analysis'), (r'recommendations', 'recommendations'),
    (r'browse/(.+)', 'browse'), (r'users/([^/]+)/playlists', 'user_playlists'),
    (r'playlists/([^/]+)', 'playlist'), (r'playlists/([^/]+)/tracks', 'playlist_tracks'),
    (r'playlists/([^/]+)/items', 'playlist_items'),
    (r'me', 'me'), (r'me/playlists', 'my_playlists'),
)


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog='python -m data_prep.testing.fake_spotify',
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--era', choices=ERAS, default='2026')
  p.add_argument('--port', type=int, default=8765)
  p.add_argument('--catalogue', choices=('metal', 'tiny'), default='metal')
  p.add_argument('--no_premium', action='store_true', help="the app's owner lacks Premium")
  p.add_argument('--artist_albums', choices=('refused', 'served'), default='refused')
  p.add_argument('--library', default='', help='also write synthetic audio files for the '
                 "catalogue's tracks here, for `python -m data_prep match`")
  args = p.parse_args(argv)
  cat = (spotify_catalogue.metal_catalogue() if args.catalogue == 'metal'
         else spotify_catalogue.tiny_catalogue())
  if args.library:
    print(f'wrote {len(spotify_catalogue.write_library(cat, args.library))} files to '
          f'{args.library}', flush=True)
  fake = FakeSpotify(args.era, cat, premium=not args.no_premium,
                     artist_albums=args.artist_albums).start(args.port)
  fake.serve_until_interrupted(
      f'fake Spotify Web API ({args.era}) at {fake.url}; collect with\n'
      f'  SPOTIPY_CLIENT_ID={fake.client_id} SPOTIPY_CLIENT_SECRET={fake.client_secret} '
      f'python -m data_prep spotify --strategy=artists --out=OUT --api_url={fake.url}')


if __name__ == '__main__':
  main()
