"""data_prep.spotify against a fake Spotify Web API (never a live account).

``FakeSpotify`` is a ``requests.Session`` handed to spotipy: it answers the Web
API's endpoints from a small catalogue, in the API's response shapes (paging
objects, batched artists/tracks/audio-features, error bodies), either as the
API was in 2020 ('legacy') or as a development-mode app sees it today ('today':
403 from audio-features / audio-analysis / related-artists, null previews,
10-item search pages, no popularity), and injects 429s and outages on demand.
"""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.parse

import numpy as np
import pytest
import requests
import soundfile as sf

from crnn_jax.core import labels, tabular
from data_prep import build, spotify

API = 'https://api.spotify.com/v1/'


def _catalogue() -> dict:
  artists = {
      'A1': ['black metal', 'atmospheric black metal'],
      'A2': ['black metal'],
      'A3': ['blackgaze', 'black metal'],
      'A4': ['death metal'],
      'A5': ['death metal', 'melodic death metal'],
      'A6': ['pop'],
      'A7': ['black metal', 'depressive black metal'],
  }
  related = {'A1': ['A6', 'A2'], 'A2': ['A7', 'A3'], 'A4': ['A5'], 'A7': [], 'A3': [],
             'A5': [], 'A6': []}
  albums, tracks = {}, {}
  for a in artists:
    n_albums = 12 if a == 'A1' else 2
    for k in range(n_albums):
      alb = f'{a}alb{k:02d}'
      albums[alb] = {'artist': a, 'tracks': []}
      for j in range(2):
        tid = f'{a[1]}{k:02d}{j}{a}trk'
        credited = [a] if j == 0 else (['A6'] if k == 1 else [a, 'A6'])
        tracks[tid] = {'album': alb, 'artists': credited, 'explicit': j == 1,
                       'duration_ms': 200_000 + 1000 * k + j}
        albums[alb]['tracks'].append(tid)
  playlists = {
      'PLbm': {'name': 'Black Metal Essentials', 'query': ['black metal', 'metal'],
               'tracks': ['1000A1trk', '6000A6trk']},
      'PLbg': {'name': 'Blackgaze', 'query': ['blackgaze'], 'tracks': ['3000A3trk']},
      'PLdm': {'name': 'Death Metal', 'query': ['death metal', 'metal'],
               'tracks': ['4000A4trk', '1001A1trk']},
      'PLrock': {'name': 'Rock Classics', 'query': ['rock'],
                 'tracks': ['4000A4trk', '6000A6trk', '6010A6trk']},
  }
  return {'artists': artists, 'related': related, 'albums': albums, 'tracks': tracks,
          'playlists': playlists}


def _mp3(seed: int) -> bytes:
  t = np.arange(int(1.5 * 22050)) / 22050
  buf = io.BytesIO()
  sf.write(buf, (0.3 * np.sin(2 * np.pi * (200 + 37 * seed) * t)).astype(np.float32), 22050,
           format='MP3')
  return buf.getvalue()


class FakeSpotify(requests.Session):
  """The Web API, served from the catalogue; records every request."""

  def __init__(self, mode: str = 'legacy', reject_large_pages: bool = False):
    super().__init__()
    self.mode = mode
    self.reject_large_pages = reject_large_pages
    self.cat = _catalogue()
    self.requests: list[str] = []
    self.faults: list[tuple[str, int, dict]] = []  # (path prefix, status, headers), used once
    self.down_after: int | None = None  # requests served before a persistent outage
    self.token_faults: list[tuple[int, dict, dict]] = []  # (status, body, headers), used once

  # -- response helpers
  def _response(self, url: str, status: int, body: object = None, headers: dict | None = None,
                content: bytes | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.url = url
    r.headers.update(headers or {})
    r._content = content if content is not None else json.dumps(body).encode()
    return r

  def _error(self, url: str, status: int, message: str, headers: dict | None = None):
    return self._response(url, status, {'error': {'status': status, 'message': message}}, headers)

  def _page(self, url: str, items: list, limit: int, offset: int) -> dict:
    end = offset + limit
    return {'href': url, 'items': items[offset:end], 'limit': limit, 'offset': offset,
            'total': len(items), 'previous': None,
            'next': f'{url}&offset={end}' if end < len(items) else None}

  def _artist(self, a: str, full: bool = True) -> dict:
    obj = {'id': a, 'name': f'Artist {a}', 'type': 'artist', 'uri': f'spotify:artist:{a}'}
    if full:
      obj.update({'genres': self.cat['artists'][a], 'popularity': 50,
                  'followers': {'total': 1000}})
    return obj

  def _track(self, tid: str, full: bool = True) -> dict:
    t = self.cat['tracks'][tid]
    obj = {'id': tid, 'name': f'Song {tid}', 'type': 'track', 'explicit': t['explicit'],
           'duration_ms': t['duration_ms'], 'uri': f'spotify:track:{tid}',
           'artists': [self._artist(a, full=False) for a in t['artists']],
           'preview_url': None if self.mode == 'today' else f'https://p.scdn.co/mp3-preview/{tid}'}
    if full:
      obj['album'] = {'id': t['album'], 'name': f'Album {t["album"]}'}
      if self.mode != 'today':
        obj['popularity'] = 30 + len(tid)
    return obj

  # -- the server
  def request(self, method, url, params=None, headers=None, data=None, **kwargs):
    if url.startswith('https://accounts.spotify.com/api/token'):
      if self.token_faults:
        status, body, hdrs = self.token_faults.pop(0)
        return self._response(url, status, body, hdrs)
      return self._response(url, 200, {'access_token': 'fake-token', 'token_type': 'Bearer',
                                        'expires_in': 3600})
    parsed = urllib.parse.urlparse(url)
    query = {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query).items()}
    query.update({k: str(v) for k, v in (params or {}).items() if v is not None})
    self.requests.append(f'{method} {parsed.path}')
    if self.down_after is not None and len(self.requests) > self.down_after:
      raise requests.ConnectionError('network is down')
    path = parsed.path.replace('/v1/', '', 1).rstrip('/')
    for i, (prefix, status, hdrs) in enumerate(self.faults):
      if path.startswith(prefix):
        del self.faults[i]
        return self._error(url, status, 'API rate limit exceeded', hdrs)
    if parsed.netloc == 'p.scdn.co':
      tid = path.rsplit('/', 1)[-1]
      return self._response(url, 200, content=_mp3(sum(map(ord, tid))),
                            headers={'Content-Type': 'audio/mpeg'})
    limit, offset = int(query.get('limit', 20)), int(query.get('offset', 0))
    parts = path.split('/')
    if parts[0] == 'search':
      if self.mode == 'today' and limit > 10:
        if self.reject_large_pages:
          return self._error(url, 400, 'Invalid limit')
        limit = 10
      q = query['q']
      if query['type'] == 'playlist':
        found = [{'id': p, 'name': v['name'], 'type': 'playlist'}
                 for p, v in self.cat['playlists'].items() if q in v['query']]
        found.insert(1, None)  # the API returns null entries for removed playlists
        return self._response(url, 200, {'playlists': self._page(url, found, limit, offset)})
      tag = q.removeprefix('genre:').strip('"')
      found = [self._artist(a) for a, g in self.cat['artists'].items() if tag in g]
      return self._response(url, 200, {'artists': self._page(url, found, limit, offset)})
    if parts[0] == 'playlists' and parts[2] == 'items':
      items = [{'added_at': '2020-01-01T00:00:00Z', 'track': self._track(t)}
               for t in self.cat['playlists'][parts[1]]['tracks']]
      return self._response(url, 200, self._page(url, items, limit, offset))
    if parts[0] == 'artists' and len(parts) == 1:
      ids = query['ids'].split(',')
      return self._response(url, 200, {'artists': [self._artist(a) for a in ids]})
    if parts[0] == 'artists' and parts[2] == 'related-artists':
      if self.mode == 'today':
        return self._error(url, 403, 'Forbidden')
      return self._response(url, 200, {'artists': [self._artist(a)
                                                   for a in self.cat['related'][parts[1]]]})
    if parts[0] == 'artists' and parts[2] == 'albums':
      albums = [{'id': a, 'name': f'Album {a}', 'album_type': 'album'}
                for a, v in sorted(self.cat['albums'].items()) if v['artist'] == parts[1]]
      return self._response(url, 200, self._page(url, albums, limit, offset))
    if parts[0] == 'albums' and parts[2] == 'tracks':
      items = [self._track(t, full=False) for t in self.cat['albums'][parts[1]]['tracks']]
      return self._response(url, 200, self._page(url, items, limit, offset))
    if parts[0] == 'tracks':
      return self._response(url, 200, {'tracks': [self._track(t) for t in query['ids'].split(',')]})
    if parts[0] == 'audio-features':
      if self.mode == 'today':
        return self._error(url, 403, 'Forbidden')
      ids = query['ids'].split(',')
      return self._response(url, 200, {'audio_features': [
          {'id': t, 'danceability': 0.3, 'energy': 0.9, 'key': len(t) % 12, 'loudness': -5.5,
           'mode': 1, 'speechiness': 0.1, 'acousticness': 0.01, 'instrumentalness': 0.5,
           'liveness': 0.2, 'valence': 0.2, 'tempo': 150.0 + len(t), 'time_signature': 4,
           'type': 'audio_features'} for t in ids]})
    if parts[0] == 'audio-analysis':
      if self.mode == 'today':
        return self._error(url, 403, 'Forbidden')
      return self._response(url, 200, {'sections': [{'start': 0.0}] * (3 + len(parts[1]) % 4)})
    return self._error(url, 404, 'Not found')


@pytest.fixture(autouse=True)
def _credentials(monkeypatch):
  monkeypatch.setenv('SPOTIPY_CLIENT_ID', 'test-client-id')
  monkeypatch.setenv('SPOTIPY_CLIENT_SECRET', 'test-client-secret')


def _run(tmp_path, server: FakeSpotify, strategy: str = 'artists', out: str = 'out', **kw):
  lines: list[str] = []
  waits: list[float] = []
  kw.setdefault('genres', ['black metal', 'blackgaze', 'death metal'])
  summary = spotify.collect(strategy, str(tmp_path / out), session=server, sleep=waits.append,
                            log=lines.append, progress=False, **kw)
  with open(tmp_path / out / 'tracks.csv', newline='', encoding='utf-8') as f:
    rows = {r['id']: r for r in csv.DictReader(f)}
  return summary, rows, lines, waits


def test_artists_strategy_legacy_api(tmp_path):
  summary, rows, lines, _ = _run(tmp_path, FakeSpotify('legacy'))
  labels = {}
  for r in rows.values():
    labels.setdefault(r['artist_id'], set()).add(r['genre'])
  # A1, A2, A7 (related walk) and A3 (walk, before its own blackgaze query) are black metal;
  # A6 lacks the tag; the first tag that finds an artist is its only label.
  assert labels == {'A1': {'black metal'}, 'A2': {'black metal'}, 'A3': {'black metal'},
                    'A7': {'black metal'}, 'A4': {'death metal'}, 'A5': {'death metal'}}
  a1_albums = {r['album_id'] for r in rows.values() if r['artist_id'] == 'A1'}
  assert len(a1_albums) == 5 and a1_albums <= {f'A1alb{k:02d}' for k in range(10)}
  assert all('A6' != r['artist_id'] for r in rows.values())
  assert not any(r['id'] == '1011A1trk' for r in rows.values())  # credits only A6
  r = rows[min(t for t, r in rows.items() if r['artist_id'] == 'A1')]
  assert r['artist_genres'] == 'black metal;atmospheric black metal'
  assert r['tempo'] != '' and r['num_sections'] != '' and r['popularity'] != ''
  assert r['has_preview'] == '1' and r['path'] == os.path.join('previews', r['id'][:2],
                                                               r['id'] + '.mp3')
  assert os.path.getsize(tmp_path / 'out' / r['path']) > 0
  assert summary['refused'] == [] and not any('refused' in line for line in lines)
  for dirpath, _, files in os.walk(tmp_path / 'out'):  # credentials and token stay in memory
    for name in files:
      blob = (tmp_path / 'out' / dirpath / name).read_bytes()
      assert b'test-client-secret' not in blob and b'fake-token' not in blob, name
  assert not os.path.exists('.cache')  # spotipy's default token cache file is not used
  # Same seed, fresh folder: same albums sampled.
  _, again, _, _ = _run(tmp_path, FakeSpotify('legacy'), out='out2')
  assert set(again) == set(rows)


def test_artists_strategy_today_api_reports_each_refusal_once(tmp_path, caplog):
  server = FakeSpotify('today')
  summary, rows, lines, _ = _run(tmp_path, server)
  assert not [r for r in caplog.records if r.name.startswith('spotipy')]  # its error log is off
  for endpoint in ('audio-features refused', 'audio-analysis refused',
                   'related-artists refused', 'preview URLs are null',
                   'at most 10 items a page', 'no popularity'):
    assert sum(endpoint in line for line in lines) == 1, (endpoint, lines)
  assert sum('/audio-features' in r for r in server.requests) == 1
  assert sum('/audio-analysis' in r for r in server.requests) == 1
  assert sum('/related-artists' in r for r in server.requests) == 1
  # Related-artist walk replaced by the genre-tag search: A7 is still found.
  assert {r['artist_id'] for r in rows.values()} == {'A1', 'A2', 'A3', 'A4', 'A5', 'A7'}
  assert all(r['has_preview'] == '0' and r['preview_url'] == '' for r in rows.values())
  assert all(r['tempo'] == '' and r['popularity'] == '' for r in rows.values())
  assert all(r['explicit'] in ('True', 'False') for r in rows.values())
  assert summary['with_preview'] == 0 and not os.path.exists(tmp_path / 'out' / 'previews')


def test_search_page_limit_rejected_with_400_falls_back(tmp_path):
  server = FakeSpotify('today', reject_large_pages=True)
  _, rows, lines, _ = _run(tmp_path, server, genres=['death metal'])
  assert {r['artist_id'] for r in rows.values()} == {'A4', 'A5'}
  assert sum('at most 10 items' in line for line in lines) == 1


def test_playlists_strategy_last_genre_wins(tmp_path):
  summary, rows, _, _ = _run(tmp_path, FakeSpotify('legacy'), strategy='playlists',
                             genres=['metal', 'rock'])
  assert rows['4000A4trk']['genre'] == 'rock'  # met under metal, then rock
  assert rows['1000A1trk']['genre'] == 'metal' and rows['1000A1trk']['playlist'] == \
      'Black Metal Essentials'
  assert rows['6000A6trk']['artist_genres'] == 'pop'
  assert summary['labels'] == {'metal': 2, 'rock': 3}


def test_rate_limit_retry_after_and_max_wait(tmp_path):
  server = FakeSpotify('legacy')
  server.faults = [('search', 429, {'Retry-After': '7'}), ('artists', 429, {})]
  _, rows, lines, waits = _run(tmp_path, server, genres=['death metal'])
  assert waits[:2] == [7.0, 1.0]  # Retry-After honoured, then exponential backoff
  assert sum('HTTP 429' in line for line in lines) == 2
  assert {r['artist_id'] for r in rows.values()} == {'A4', 'A5'}
  server = FakeSpotify('legacy')
  server.faults = [('search', 429, {'Retry-After': '86400'})]
  with pytest.raises(spotify.CollectorError, match='rerun the same command later'):
    _run(tmp_path, server, out='out2', genres=['death metal'])


def test_resumes_after_an_outage_without_repeating_requests(tmp_path):
  full = FakeSpotify('legacy')
  _, reference_rows, _, _ = _run(tmp_path, full, out='ref', previews=False)
  total = len(full.requests)
  broken = FakeSpotify('legacy')
  broken.down_after = total // 2
  with pytest.raises(requests.ConnectionError):
    _run(tmp_path, broken, out='run', previews=False)
  healthy = FakeSpotify('legacy')
  _, rows, _, _ = _run(tmp_path, healthy, out='run', previews=False)
  assert rows == reference_rows
  # Only what the broken run had not finished is requested again (token POST not counted).
  assert len(healthy.requests) == total - total // 2


def test_missing_credentials_is_one_clear_error(tmp_path, monkeypatch):
  monkeypatch.delenv('SPOTIPY_CLIENT_ID')
  with pytest.raises(spotify.CollectorError, match='SPOTIPY_CLIENT_ID'):
    spotify.collect('artists', str(tmp_path / 'out'), session=FakeSpotify(), log=lambda s: None)
  assert not os.path.exists(tmp_path / 'out')


def test_collected_table_builds_a_dataset(tmp_path):
  _run(tmp_path, FakeSpotify('legacy'))
  out = str(tmp_path / 'tfds')
  from crnn_jax.core import audio
  summary = build.build_dataset(
      str(tmp_path / 'out' / 'tracks.csv'), out, 'spot', workers=1, progress=False,
      clip=audio.ClipSettings(seconds=2.0, min_seconds=1.0), label_map=labels.METAL_LABEL_MAP,
      manifest_options={'preset': 'spotify'}, split=(0.5, 0.25, 0.25))
  import tensorflow_datasets as tfds
  md = tfds.builder('spot', data_dir=out).info.metadata
  assert md['tabular_names'] == list(tabular.REFERENCE_COLUMNS)
  assert summary['classes'] == ['black metal', 'death metal']
  assert sum(summary['clips_per_split'].values()) == summary['clips_per_split']['train'] + \
      summary['clips_per_split']['validation'] + summary['clips_per_split']['test'] > 20


def test_match_fills_paths_from_a_local_library(tmp_path):
  from data_prep import match
  assert match.normalise('Motörhead – Ace of Spades (Live) ') == 'motorhead ace of spades'
  assert match.normalise('Paranoid - 2012 Remastered Version') == 'paranoid'
  lib = tmp_path / 'lib'
  files = ['Black Sabbath/Paranoid (1970)/02 Paranoid.mp3', 'Motörhead - Ace of Spades.flac',
           'Other Band/01 - Paranoid.mp3', 'notes/readme.txt']
  for rel in files:
    os.makedirs((lib / rel).parent, exist_ok=True)
    (lib / rel).write_bytes(b'x')
  table = tmp_path / 'tracks.csv'
  with open(table, 'w', newline='', encoding='utf-8') as f:
    w = csv.DictWriter(f, fieldnames=spotify.COLUMNS)
    w.writeheader()
    for tid, name, artists, path in [
        ('t1', 'Paranoid - 2012 Remaster', 'Black Sabbath', ''),
        ('t2', 'Ace Of Spades', 'Motorhead;Lemmy', ''),
        ('t3', 'War Pigs', 'Black Sabbath', ''),
        ('t4', 'Iron Man', 'Black Sabbath', '/music/iron.mp3')]:
      w.writerow({c: '' for c in spotify.COLUMNS} | {'id': tid, 'name': name, 'artists': artists,
                                                      'path': path})
  out = tmp_path / 'matched.csv'
  counts = match.match_table(str(table), str(lib), str(out))
  assert counts == {'rows': 4, 'had_path': 1, 'matched': 2, 'ambiguous': 0, 'unmatched': 1}
  with open(out, newline='', encoding='utf-8') as f:
    paths = {r['id']: r['path'] for r in csv.DictReader(f)}
  assert paths == {'t1': str(lib / files[0]), 't2': str(lib / files[1]), 't3': '',
                   't4': '/music/iron.mp3'}


def test_today_api_table_plus_local_library_builds_with_audio_features(tmp_path):
  """No previews, no audio features: match local files, estimate tabular from audio."""
  from crnn_jax.core import audio
  from data_prep import match
  _, rows, _, _ = _run(tmp_path, FakeSpotify('today'), genres=['death metal'])
  lib = tmp_path / 'library'
  for k, r in enumerate(sorted(rows.values(), key=lambda r: r['id'])):
    path = lib / r['artists'].split(';')[0] / f"{r['name']}.wav"
    os.makedirs(path.parent, exist_ok=True)
    t = np.arange(int(2.0 * 22050)) / 22050
    sf.write(path, (0.3 * np.sin(2 * np.pi * (180 + 45 * k) * t)).astype(np.float32), 22050)
  counts = match.match_table(str(tmp_path / 'out' / 'tracks.csv'), str(lib),
                             str(tmp_path / 'matched.csv'))
  assert counts['matched'] == len(rows) > 0
  out = str(tmp_path / 'tfds')
  summary = build.build_dataset(
      str(tmp_path / 'matched.csv'), out, 'today', workers=1, progress=False, tabular='audio',
      clip=audio.ClipSettings(seconds=2.0, min_seconds=1.0), manifest_options={'preset': 'spotify'},
      split=(0.5, 0.25, 0.25), group_by_artist=False)
  assert sum(summary['clips_per_split'].values()) == len(rows)
  # Spotify's explicit and duration kept; refused features estimated; popularity (gone) left out.
  assert summary['tabular_names'] == ['explicit', 'key', 'mode', 'duration_ms', 'loudness',
                                      'num_sections', 'tempo', 'time_signature']
  assert 'popularity' in summary['empty_tabular_columns']
  import tensorflow_datasets as tfds
  src = tfds.data_source('today', data_dir=out)['train']
  r = src[0]
  track = rows[r['track_id'].decode() if isinstance(r['track_id'], bytes) else r['track_id']]
  assert r['tabular'][3] == float(track['duration_ms'])  # Spotify's, not the 2 s file's
  assert r['tabular'][0] == (2.0 if track['explicit'] == 'True' else 1.0)


def test_wrong_credentials_is_one_line_error_without_the_secret(tmp_path):
  server = FakeSpotify('legacy')
  server.token_faults = [(400, {'error': 'invalid_client', 'error_description': 'Invalid client'},
                          {})]
  with pytest.raises(spotify.CollectorError, match='refused the client credentials') as e:
    _run(tmp_path, server)
  message = str(e.value)
  assert 'invalid_client' in message and 'Premium' in message and '\n' not in message
  assert 'test-client-secret' not in message


def test_token_endpoint_429_and_5xx_are_retried(tmp_path):
  server = FakeSpotify('legacy')
  server.token_faults = [(503, {'error': 'server_error'}, {}),
                         (429, {'error': 'rate_limited'}, {'Retry-After': '3'})]
  _, rows, _, waits = _run(tmp_path, server, genres=['death metal'], previews=False)
  assert waits[:2] == [1.0, 3.0]
  assert {r['artist_id'] for r in rows.values()} == {'A4', 'A5'}


def test_retry_after_as_http_date_or_garbage(tmp_path):
  import datetime
  import email.utils
  soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
  wait = spotify.retry_wait(email.utils.format_datetime(soon, usegmt=True), 0)
  assert 25.0 < wait <= 30.0
  assert spotify.retry_wait('Wed, 21 Oct 2015 07:28:00 GMT', 0) == 0.0  # in the past
  assert spotify.retry_wait('soon', 3) == 8.0  # unparsable: exponential backoff
  assert spotify.retry_wait('inf', 10) == spotify.MAX_BACKOFF
  server = FakeSpotify('legacy')
  later = email.utils.format_datetime(soon + datetime.timedelta(days=1), usegmt=True)
  server.faults = [('search', 429, {'Retry-After': 'soon'}),
                   ('artists', 429, {'Retry-After': later})]
  with pytest.raises(spotify.CollectorError, match='rerun the same command later'):
    _run(tmp_path, server, genres=['death metal'])
  server = FakeSpotify('legacy')  # preview downloads: an HTTP-date wait is capped
  server.faults = [('/mp3-preview', 429, {'Retry-After': later})]
  _, rows, _, waits = _run(tmp_path, server, out='out2', genres=['death metal'])
  assert waits == [spotify.MAX_PREVIEW_WAIT] and all(r['path'] for r in rows.values())
