"""data_prep.spotify against the local fake Spotify Web API (never a live account).

``data_prep.testing.fake_spotify`` serves the API over real HTTP as an app of
each era sees it (2020 extended quota, 2024-11, 2026 development mode), with
rate limits, 5xx bursts, expired tokens and the Premium stop on demand.
"""

from __future__ import annotations

import base64
import csv
import datetime
import email.utils
import os
from pathlib import Path

import pytest
import requests

from crnn_jax.core import audio, labels, tabular
from data_prep import __main__ as data_prep_main
from data_prep import build, match
from data_prep.cache import AnswerCache
from data_prep.spotify import catalog as catalog_lib
from data_prep.spotify import collector, errors, previews, table
from data_prep.spotify.client import Client
from data_prep.testing import fake_spotify, spotify_catalogue
from data_prep.testing.fake_spotify import FakeSpotify

SECRET = 'test-client-secret-7f3a'
GENRES = ['black metal', 'blackgaze', 'death metal']


@pytest.fixture(autouse=True)
def _credentials(monkeypatch):
  monkeypatch.setenv('SPOTIPY_CLIENT_ID', 'fake-id')
  monkeypatch.setenv('SPOTIPY_CLIENT_SECRET', SECRET)


def _fake(era: str, **kw) -> FakeSpotify:
  return FakeSpotify(era, client_secret=SECRET, **kw).start()


def _rows(path) -> dict[str, dict]:
  with open(path, newline='', encoding='utf-8') as f:
    return {r['id']: r for r in csv.DictReader(f)}


def _run(tmp_path, fake: FakeSpotify, strategy: str = 'artists', out: str = 'out', **kw):
  lines: list[str] = []
  waits: list[float] = []
  kw.setdefault('genres', GENRES)
  try:
    summary = collector.collect(strategy, str(tmp_path / out), api_url=fake.url,
                                sleep=waits.append, log=lines.append, progress=False, **kw)
  finally:
    fake.stop()
  return summary, _rows(tmp_path / out / 'tracks.csv'), lines, waits


def _artist_labels(rows) -> dict[str, set[str]]:
  out: dict[str, set[str]] = {}
  for r in rows.values():
    out.setdefault(r['artist_id'], set()).add(r['genre'])
  return out


BLACK_AND_DEATH = {'A1': {'black metal'}, 'A2': {'black metal'}, 'A3': {'black metal'},
                   'A7': {'black metal'}, 'A4': {'death metal'}, 'A5': {'death metal'}}


# ---------------------------------------------------------------- the three eras

def test_artists_strategy_2020_is_the_reference(tmp_path):
  summary, rows, lines, _ = _run(tmp_path, _fake('2020'))
  # A1, A2, A7 (related walk) and A3 (walk, before its own blackgaze query) are black metal;
  # A6 lacks the tag; the first tag that finds an artist is its only label.
  assert _artist_labels(rows) == BLACK_AND_DEATH
  a1_albums = {r['album_id'] for r in rows.values() if r['artist_id'] == 'A1'}
  assert len(a1_albums) == 5 and a1_albums <= {f'A1alb{k:02d}' for k in range(10)}
  assert 'A1alb01t1' not in rows  # credits only A6
  r = rows['A1alb00t0'] if 'A1alb00t0' in rows else rows[min(
      t for t, r in rows.items() if r['artist_id'] == 'A1')]
  assert r['artist_genres'] == 'black metal;atmospheric black metal'
  assert r['tempo'] != '' and r['num_sections'] != '' and r['popularity'] != ''
  assert r['has_preview'] == '1' and r['path'] == previews.preview_path(r['id'])
  assert os.path.getsize(tmp_path / 'out' / r['path']) > 0
  assert summary['refused'] == [] and not any('refused' in line for line in lines)
  _, again, _, _ = _run(tmp_path, _fake('2020'), out='out2')  # same seed: same albums
  assert set(again) == set(rows)


def test_artists_strategy_2024_11_walks_by_genre_search(tmp_path):
  summary, rows, lines, _ = _run(tmp_path, _fake('2024-11'))
  assert summary['refused'] == ['GET /artists/{id}/related-artists', 'GET /audio-analysis/{id}',
                                'GET /audio-features']
  assert sum('related-artists refused (HTTP 404' in line for line in lines) == 1
  assert _artist_labels(rows) == BLACK_AND_DEATH  # A7 found by the genre search
  assert all(r['has_preview'] == '0' and r['tempo'] == '' for r in rows.values())
  assert all(r['popularity'] != '' for r in rows.values())  # still served in 2024


def test_artists_strategy_2026_reports_each_refusal_once(tmp_path, caplog):
  fake = _fake('2026')
  summary, rows, lines, _ = _run(tmp_path, fake)
  assert not [r for r in caplog.records if r.name.startswith('spotipy')]  # its error log is off
  for said in ('/items refused (HTTP 403', "at most 10 items (HTTP 400 'Invalid limit'",
               '/albums refused (HTTP 403', 'GET /tracks?ids= refused (HTTP 403',
               'carry no popularity', 'audio-features refused', 'audio-analysis/{id} refused',
               'preview URLs are null', 'genre search'):
    assert sum(said in line for line in lines) == 1, (said, lines)
  paths = [r.path for r in fake.requests]
  assert paths.count('/v1/tracks/') == 1  # one batch call, refused
  assert len([p for p in paths if p.startswith('/v1/tracks/') and p != '/v1/tracks/']) == 1
  assert not any('related-artists' in p for p in paths)  # no seed artist to walk from
  searches = [int(r.query['limit']) for r in fake.requests if r.path == '/v1/search']
  assert searches.count(50) == 1 and max(s for s in searches if s != 50) <= 10  # one 400
  assert _artist_labels(rows) == BLACK_AND_DEATH
  assert all(r['popularity'] == '' and r['explicit'] in ('True', 'False') for r in rows.values())
  a1_albums = {r['album_id'] for r in rows.values() if r['artist_id'] == 'A1'}
  assert len(a1_albums) == 5  # albums found through a track search by artist name
  assert summary['with_preview'] == 0 and not os.path.exists(tmp_path / 'out' / 'previews')
  report = _rows_of(tmp_path / 'out' / 'spotify_report.csv')
  assert {r['id'] for r in report if r['kind'] == 'playlist'} == {'PLbm', 'PLbg', 'PLdm',
                                                                 'PLmine'}
  assert [r['reason'] for r in report if r['kind'] == 'genre'] == [
      'no new artist: the 1 found with this tag have an earlier tag as label']


def test_a_genre_without_artists_is_reported_and_the_run_goes_on(tmp_path):
  summary, rows, lines, _ = _run(tmp_path, _fake('2026'), genres=['polka', 'death metal'])
  assert "genre 'polka': no artist found with this exact genre tag" in lines
  assert summary['labels'] == {'death metal': len(rows)} and rows
  report = _rows_of(tmp_path / 'out' / 'spotify_report.csv')
  assert [r['id'] for r in report if r['kind'] == 'genre'] == ['polka']


def test_2026_with_artist_albums_served_pages_by_ten(tmp_path):
  fake = _fake('2026', artist_albums='served')
  summary, rows, _, _ = _run(tmp_path, fake, genres=['black metal'])
  album_limits = [int(r.query['limit']) for r in fake.requests if r.path.endswith('/albums')]
  assert set(album_limits) == {10}  # the reference's first 10 albums: one page of 10
  assert 'GET /artists/{id}/albums' not in summary['refused']
  assert not any(r.query.get('q', '').startswith('artist:') for r in fake.requests)
  a1_albums = {r['album_id'] for r in rows.values() if r['artist_id'] == 'A1'}
  assert len(a1_albums) == 5 and a1_albums <= {f'A1alb{k:02d}' for k in range(10)}


def _raw(fake: FakeSpotify, path: str, **params) -> requests.Response:
  token = requests.post(fake.url + '/api/token', data={'grant_type': 'client_credentials'},
                        auth=('fake-id', SECRET), timeout=10).json()['access_token']
  return requests.get(f'{fake.url}/v1/{path}', params=params, timeout=10,
                      headers={'Authorization': f'Bearer {token}'})


def test_the_fake_answers_as_each_era_does():
  """The fixture itself, against the migration guide and reported behaviour."""
  with FakeSpotify('2026', client_secret=SECRET) as fake:
    for path in ('artists/A1/top-tracks', 'browse/categories', 'users/someone/playlists',
                 'playlists/PLbm/tracks', 'playlists/PLbm/items', 'tracks', 'artists'):
      r = _raw(fake, path, ids='A1alb00t0')
      assert (r.status_code, r.json()) == (403, {'error': {'status': 403, 'message': 'Forbidden'}})
    assert _raw(fake, 'search', q='band', type='track', limit=11).json() == {
        'error': {'status': 400, 'message': 'Invalid limit'}}
    assert len(_raw(fake, 'search', q='song', type='track').json()['tracks']['items']) == 5
    track = _raw(fake, 'tracks/A1alb00t0').json()
    assert 'popularity' not in track and 'available_markets' not in track
    assert track['external_ids'] and track['preview_url'] is None  # ISRC restored in March
    artist = _raw(fake, 'artists/A1').json()
    assert artist['genres'] and not {'popularity', 'followers'} & set(artist)
  with FakeSpotify('2026', client_secret=SECRET, premium=False) as fake:
    r = _raw(fake, 'search', q='x', type='artist')
    assert r.status_code == 403 and r.headers['Content-Type'] == 'text/plain'
    assert r.text == fake_spotify.PREMIUM_TEXT
  with FakeSpotify('2024-11', client_secret=SECRET) as fake:
    assert _raw(fake, 'audio-analysis/A1alb00t0').content == b''
    assert _raw(fake, 'artists/A1/related-artists').json()['error']['status'] == 404
    assert _raw(fake, 'playlists/PLed/tracks').status_code == 404  # editorial
    assert _raw(fake, 'playlists/PLbm/tracks').status_code == 200
    assert _raw(fake, 'tracks/A1alb00t0').json()['popularity'] > 0
  with FakeSpotify('2020', client_secret=SECRET) as fake:
    assert _raw(fake, 'playlists/PLbm/items').json()['error']['message'] == 'Service not found'
    assert _raw(fake, 'audio-features', ids='A1alb00t0').json()['audio_features'][0]['tempo']
    assert _raw(fake, 'tracks/A1alb00t0').json()['preview_url'].endswith('.mp3')


# ---------------------------------------------------------------- resuming

def test_rerun_replays_answers_and_refusals(tmp_path):
  _, first, _, _ = _run(tmp_path, _fake('2026'))
  fake = _fake('2026')
  summary, again, lines, _ = _run(tmp_path, fake)
  assert again == first and summary['requests'] == 0 and fake.requests == []
  assert sum('[known from an earlier run' in line for line in lines) == 5  # one per endpoint
  fake = _fake('2026')
  _, _, lines, _ = _run(tmp_path, fake, retry_refused=True)
  assert any('forgot' in line for line in lines)
  assert any(r.path.startswith('/v1/audio-features') for r in fake.requests)


def test_resumes_after_an_outage_without_repeating_requests(tmp_path):
  full = _fake('2026')
  _, reference_rows, _, _ = _run(tmp_path, full, out='ref', previews=False)
  total = len(full.requests)
  broken = _fake('2026')
  broken.fail('/v1/', 503, times=10**6, after=total // 2)
  with pytest.raises(errors.CollectorError, match='keeps failing .* rerun the same command'):
    _run(tmp_path, broken, out='run', previews=False)
  healthy = _fake('2026')
  _, rows, _, _ = _run(tmp_path, healthy, out='run', previews=False)
  assert rows == reference_rows
  assert len(healthy.requests) == total - total // 2  # only what was not finished


# ---------------------------------------------------------------- trouble

def test_rate_limit_retry_after_and_max_wait(tmp_path):
  fake = _fake('2026')
  fake.rate_limit('/v1/search', '7')
  fake.rate_limit('/v1/artists', None, flat=True)  # July 2026's quota body, no Retry-After
  _, rows, lines, waits = _run(tmp_path, fake, genres=['death metal'], previews=False)
  assert waits[:2] == [7.0, 1.0]  # Retry-After honoured, then exponential backoff
  assert sum('HTTP 429' in line for line in lines) == 2
  assert {r['artist_id'] for r in rows.values()} == {'A4', 'A5'}
  fake = _fake('2026')
  fake.rate_limit('/v1/search', '86400')
  with pytest.raises(errors.CollectorError, match='rerun the same command later'):
    _run(tmp_path, fake, out='out2', genres=['death metal'])


def test_5xx_bursts_are_retried_with_backoff(tmp_path):
  fake = _fake('2024-11')
  fake.fail('/v1/search', 502, times=3)
  _, rows, _, waits = _run(tmp_path, fake, genres=['death metal'])
  assert waits == [1.0, 2.0, 4.0]
  assert {r['artist_id'] for r in rows.values()} == {'A4', 'A5'}


def test_expired_tokens_are_renewed(tmp_path):
  fake = _fake('2026', token_ttl=4)
  _, rows, lines, _ = _run(tmp_path, fake)
  assert _artist_labels(rows) == BLACK_AND_DEATH
  assert len(fake.tokens) > 3
  assert sum("access token refused early (HTTP 401 'The access token expired')" in line
             for line in lines) == 1


@pytest.mark.parametrize('as_json', [False, True])  # both reported forms of the body
def test_owner_without_premium_stops_and_caches_nothing_refused(tmp_path, as_json):
  assert len(fake_spotify.PREMIUM_TEXT.encode()) == 159
  with pytest.raises(errors.CollectorError, match='Premium') as e:
    _run(tmp_path, _fake('2026', premium=False, premium_json=as_json))
  assert 'Active premium subscription required' in str(e.value) and '\n' not in str(e.value)
  cache = AnswerCache(str(tmp_path / 'out' / collector.CACHE_FILE))
  assert cache.forget_refusals() == 0  # the stop is not a refusal to replay
  cache.close()
  _, rows, _, _ = _run(tmp_path, _fake('2026'))  # subscription renewed: the rerun works
  assert _artist_labels(rows) == BLACK_AND_DEATH


def test_wrong_credentials_is_one_line_without_the_secret(tmp_path):
  fake = FakeSpotify('2026', client_secret='another-secret').start()
  with pytest.raises(errors.CollectorError, match='refused the app\'s credentials') as e:
    _run(tmp_path, fake)
  message = str(e.value)
  assert 'invalid_client' in message and 'Premium' in message and '\n' not in message
  assert SECRET not in message


def test_missing_credentials_is_one_clear_error(tmp_path, monkeypatch):
  monkeypatch.delenv('SPOTIPY_CLIENT_ID')
  with pytest.raises(errors.CollectorError, match='SPOTIPY_CLIENT_ID'):
    collector.collect('artists', str(tmp_path / 'out'), log=lambda s: None)
  assert not os.path.exists(tmp_path / 'out')


def test_token_endpoint_429_and_5xx_are_retried(tmp_path):
  fake = _fake('2026')
  fake.fail('/api/token', 503)
  fake.rate_limit('/api/token', '3')
  _, rows, _, waits = _run(tmp_path, fake, genres=['death metal'], previews=False)
  assert waits[:2] == [1.0, 3.0]
  assert {r['artist_id'] for r in rows.values()} == {'A4', 'A5'}


def test_retry_after_as_http_date_or_garbage(tmp_path):
  soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
  assert 25.0 < errors.retry_wait(email.utils.format_datetime(soon, usegmt=True), 0) <= 30.0
  assert errors.retry_wait('Wed, 21 Oct 2015 07:28:00 GMT', 0) == 0.0  # in the past
  assert errors.retry_wait('soon', 3) == 8.0  # unparsable: exponential backoff
  assert errors.retry_wait('inf', 10) == errors.MAX_BACKOFF
  later = email.utils.format_datetime(soon + datetime.timedelta(days=1), usegmt=True)
  fake = _fake('2020')
  fake.rate_limit('/v1/search', 'soon')
  fake.rate_limit('/v1/artists', later)
  with pytest.raises(errors.CollectorError, match='rerun the same command later'):
    _run(tmp_path, fake, genres=['death metal'])
  fake = _fake('2020')  # preview downloads: an HTTP-date wait is capped
  fake.rate_limit('/previews/', later)
  _, rows, _, waits = _run(tmp_path, fake, out='out2', genres=['death metal'])
  assert previews.MAX_PREVIEW_WAIT in waits and all(r['path'] for r in rows.values())


def test_search_offset_cap_ends_paging_with_a_notice(tmp_path):
  fake = _fake('2026', catalogue=spotify_catalogue.metal_catalogue(), search_offset_cap=20)
  sp = collector.make_client(api_url=fake.url)
  lines: list[str] = []
  client = Client(sp, AnswerCache(str(tmp_path / 'c.sqlite')), log=lines.append)
  cat = catalog_lib.Catalog(client, table.Report(), progress=False)
  try:
    found = list(cat.search('band', 'artist', 100))
  finally:
    fake.stop()
  assert len(found) == 20 and sum('stops at offset 20' in line for line in lines) == 1


# ---------------------------------------------------------------- the playlists strategy

def test_playlists_strategy_2020_last_genre_wins(tmp_path):
  summary, rows, _, _ = _run(tmp_path, _fake('2020'), strategy='playlists',
                             genres=['metal', 'rock'])
  assert rows['A4alb00t0']['genre'] == 'rock'  # met under metal, then rock
  assert rows['A1alb00t0']['genre'] == 'metal'
  assert rows['A1alb00t0']['playlist'] == 'Black Metal Essentials'
  assert rows['A6alb00t0']['artist_genres'] == 'pop'
  assert rows['A2alb00t0']['playlist'] == 'Metal Editorial Mix'  # editorial: served in 2020
  assert summary['labels'] == {'metal': 5, 'rock': 3}


def test_playlists_strategy_2024_skips_editorial_playlists_with_a_reason(tmp_path):
  summary, rows, _, _ = _run(tmp_path, _fake('2024-11'), strategy='playlists',
                             genres=['metal', 'rock'])
  assert 'A2alb00t0' not in rows and summary['labels'] == {'metal': 4, 'rock': 3}
  report = _rows_of(tmp_path / 'out' / 'spotify_report.csv')
  skipped = [r for r in report if r['kind'] == 'playlist']
  assert [r['id'] for r in skipped] == ['PLed']
  assert skipped[0]['reason'].startswith('playlist not found (HTTP 404')


def test_playlists_strategy_2026_with_client_credentials_says_why_nothing(tmp_path):
  summary, rows, lines, _ = _run(tmp_path, _fake('2026'), strategy='playlists',
                                 genres=['metal', 'rock'])
  assert rows == {} and summary['tracks'] == 0
  assert sum('no playlist served its tracks' in line and '--auth=user' in line
             for line in lines) == 1


def test_playlists_from_mine_needs_user_authorisation(tmp_path):
  with pytest.raises(errors.CollectorError, match='needs user authorisation'):
    collector.collect('playlists', str(tmp_path / 'out'), playlists_from='mine',
                      log=lambda s: None)
  assert not os.path.exists(tmp_path / 'out')


def _log_in_through(fake: FakeSpotify, monkeypatch) -> None:
  """The user's part of the login: open the printed URL, paste where it leads."""
  def answer(prompt: str) -> str:
    url = next(w for w in prompt.split() if w.startswith(fake.url + '/authorize'))
    return requests.get(url, allow_redirects=False, timeout=10).headers['Location']
  monkeypatch.setattr('builtins.input', answer)


def test_user_login_reads_own_playlists_in_2026(tmp_path, monkeypatch):
  monkeypatch.delenv('SPOTIPY_CLIENT_SECRET')  # PKCE: no secret at all
  fake = _fake('2026')
  _log_in_through(fake, monkeypatch)
  summary, rows, _, _ = _run(tmp_path, fake, strategy='playlists', auth='user',
                             playlists_from='mine', open_browser=False,
                             genres=['death metal', 'black metal'])
  assert set(rows) == {'A5alb00t0', 'A5alb01t0'} and summary['labels'] == {'death metal': 2}
  assert rows['A5alb00t0']['artist_genres'] == 'death metal;melodic death metal'
  assert all(r.user == 'fake_user' for r in fake.requests)


def test_user_not_on_the_apps_list_is_one_line(tmp_path, monkeypatch):
  fake = _fake('2026', registered_users=())
  _log_in_through(fake, monkeypatch)
  with pytest.raises(errors.CollectorError, match='User Management'):
    _run(tmp_path, fake, strategy='playlists', auth='user', open_browser=False)


def test_unregistered_redirect_uri_is_one_line(tmp_path, monkeypatch):
  monkeypatch.setenv('SPOTIPY_REDIRECT_URI', 'http://127.0.0.1:9999/elsewhere')
  fake = _fake('2026')

  def answer(prompt: str) -> str:
    url = next(w for w in prompt.split() if w.startswith(fake.url + '/authorize'))
    assert requests.get(url, allow_redirects=False, timeout=10).status_code == 400
    raise EOFError  # the user cannot get past the login page
  monkeypatch.setattr('builtins.input', answer)
  with pytest.raises(errors.CollectorError, match='needs the login'):
    _run(tmp_path, fake, strategy='playlists', auth='user', open_browser=False)


# ---------------------------------------------------------------- the command

def test_command_never_writes_or_prints_the_secret(tmp_path, capsys):
  fake = _fake('2026', token_ttl=5)
  fake.rate_limit('/v1/search', '0')
  out = tmp_path / 'out'
  try:
    code = data_prep_main.main(['spotify', '--strategy=artists', f'--out={out}',
                                '--genres=black metal,death metal', f'--api_url={fake.url}',
                                '--no_progress'])
  finally:
    fake.stop()
  printed = capsys.readouterr()
  assert code == 0 and 'wrote' in printed.out
  secrets = [SECRET, base64.b64encode(f'fake-id:{SECRET}'.encode()).decode(), *fake.tokens]
  blobs = [printed.out.encode(), printed.err.encode()]
  for dirpath, _, names in os.walk(out):
    blobs += [Path(dirpath, n).read_bytes() for n in names]
  assert len(blobs) >= 5
  for secret in secrets:
    assert not any(secret.encode() in blob for blob in blobs), secret[:4]
  assert not os.path.exists('.cache')  # spotipy's default token cache file is not used


def test_command_stops_with_one_line(tmp_path, capsys):
  fake = _fake('2026', premium=False)
  try:
    code = data_prep_main.main(['spotify', '--strategy=artists', f'--out={tmp_path}/o',
                                f'--api_url={fake.url}', '--no_progress'])
  finally:
    fake.stop()
  err = capsys.readouterr().err.strip()
  assert code == 2 and err.startswith('error: Spotify refuses every request') and '\n' not in err


# ---------------------------------------------------------------- to a data set

def _rows_of(path) -> list[dict]:
  with open(path, newline='', encoding='utf-8') as f:
    return list(csv.DictReader(f))


def test_collected_table_builds_a_dataset(tmp_path):
  _run(tmp_path, _fake('2020'))
  out = str(tmp_path / 'tfds')
  summary = build.build_dataset(
      str(tmp_path / 'out' / 'tracks.csv'), out, 'spot', workers=1, progress=False,
      clip=audio.ClipSettings(seconds=1.0, min_seconds=1.0), label_map=labels.METAL_LABEL_MAP,
      manifest_options={'preset': 'spotify'}, split=(0.5, 0.25, 0.25))
  import tensorflow_datasets as tfds
  md = tfds.builder('spot', data_dir=out).info.metadata
  assert md['tabular_names'] == list(tabular.REFERENCE_COLUMNS)
  assert summary['classes'] == ['black metal', 'death metal']
  assert sum(summary['clips_per_split'].values()) > 20


def test_match_fills_paths_from_a_local_library(tmp_path):
  assert match.normalise('Motörhead – Ace of Spades (Live) ') == 'motorhead ace of spades'
  assert match.normalise('Paranoid - 2012 Remastered Version') == 'paranoid'
  lib = tmp_path / 'lib'
  names = ['Black Sabbath/Paranoid (1970)/02 Paranoid.mp3', 'Motörhead - Ace of Spades.flac',
           'Other Band/01 - Paranoid.mp3', 'notes/readme.txt']
  for rel in names:
    os.makedirs((lib / rel).parent, exist_ok=True)
    (lib / rel).write_bytes(b'x')
  rows = [('t1', 'Paranoid - 2012 Remaster', 'Black Sabbath', ''),
          ('t2', 'Ace Of Spades', 'Motorhead;Lemmy', ''), ('t3', 'War Pigs', 'Black Sabbath', ''),
          ('t4', 'Iron Man', 'Black Sabbath', '/music/iron.mp3')]
  table.write_table([dict.fromkeys(table.COLUMNS, '') | {'id': t, 'name': n, 'artists': a,
                                                         'path': p} for t, n, a, p in rows],
                    str(tmp_path / 'tracks.csv'))
  counts = match.match_table(str(tmp_path / 'tracks.csv'), str(lib), str(tmp_path / 'm.csv'))
  assert counts == {'rows': 4, 'had_path': 1, 'matched': 2, 'ambiguous': 0, 'unmatched': 1}
  paths = {r['id']: r['path'] for r in _rows_of(tmp_path / 'm.csv')}
  assert paths == {'t1': str(lib / names[0]), 't2': str(lib / names[1]), 't3': '',
                   't4': '/music/iron.mp3'}


def test_2026_table_plus_local_library_builds_with_audio_features(tmp_path):
  """No previews, no audio features: match local files, estimate tabular from audio."""
  fake = _fake('2026')
  _, rows, _, _ = _run(tmp_path, fake, genres=['death metal'])
  lib = tmp_path / 'library'
  spotify_catalogue.write_library(fake.cat, str(lib), rows, seconds=2.0)
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
