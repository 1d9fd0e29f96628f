"""python -m crnn_jax.serve: the web page's server, over real HTTP.

A uvicorn server in a thread serves a tiny workdir (tests/tiny_models.py)
with a 1 MB upload limit. An upload's answer equals the command line's
prediction and embeddings for the same file; bad uploads (not audio, 0 bytes,
over the limit, with or without a declared length) get one-line messages and
the server goes on serving; several uploads run at once while the page stays
responsive; uploads leave nothing behind in the temporary folder; the page
references nothing outside the server; only the names the server is known by
and, on /api/, only the run's token are answered. The browser test is in
test_serve_browser.py (slow).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import matplotlib.image
import numpy as np
import pytest
import soundfile as sf
import uvicorn
from conftest import ROOT
from serve_command import free_port, serve_command
from tiny_models import make_workdir, write_clip

from crnn_jax.inference.predictor import Predictor
from crnn_jax.serve.app import create_app

LIMIT = 2**20
TOKEN = 'the-token-of-this-test'
AUTH = {'Authorization': f'Bearer {TOKEN}'}


@pytest.fixture(scope='module')
def uploads_dir(tmp_path_factory):
  """Where tempfile puts the server's upload folders during these tests."""
  folder = tmp_path_factory.mktemp('tmp_uploads')
  saved = tempfile.tempdir
  tempfile.tempdir = str(folder)
  yield folder
  tempfile.tempdir = saved


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
  """``app`` on a free port, in a thread; yields its URL."""
  port = free_port()
  running = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=port, log_level='warning'))
  thread = threading.Thread(target=running.run, daemon=True)
  thread.start()
  for _ in range(200):
    if running.started:
      break
    time.sleep(0.05)
  try:
    yield f'http://127.0.0.1:{port}'
  finally:
    running.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope='module')
def server(tmp_path_factory, uploads_dir):
  workdir = make_workdir(tmp_path_factory.mktemp('wd_serve'))[3]
  predictor = Predictor.from_workdir(workdir, batch_size=4)
  with serving(create_app(predictor, LIMIT, workers=2, token=TOKEN)) as url:
    yield url, predictor


class GatedPredictor(Predictor):
  """Scores for real, but only once the test opens the gate: a test can see
  uploads being scored at the same time and the page answering meanwhile."""

  def __init__(self, model):
    super().__init__(model)
    self.gate = threading.Event()
    self.lock = threading.Lock()
    self.inside = 0

  def predict_files(self, *args, **kwargs):
    with self.lock:
      self.inside += 1
    self.gate.wait(timeout=120)
    return super().predict_files(*args, **kwargs)


@pytest.fixture(scope='module')
def clips(tmp_path_factory):
  root = tmp_path_factory.mktemp('serve_clips')
  return {'swing': write_clip(root / 'swing.wav', 'swing', 17.0, index=1),  # 3 windows, 750 kB
          'metal': write_clip(root / 'metal.flac', 'metal', 12.0, index=2),
          'strings': write_clip(root / 'strings.ogg', 'strings', 12.0, index=3)}


def post(url: str, name: str, body, headers: dict | None = None) -> tuple[int, dict]:
  request = urllib.request.Request(f'{url}/api/predict?name={urllib.request.quote(name)}',
                                   data=body, method='POST', headers={**AUTH, **(headers or {})})
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def post_declared(url: str, name: str, size: int) -> tuple[int, dict]:
  """Announces ``size`` bytes and waits (Expect: 100-continue, as curl does for large
  bodies): a server that refuses on the declared length answers before any byte."""
  host, port = url.removeprefix('http://').split(':')
  connection = http.client.HTTPConnection(host, int(port), timeout=60)
  try:
    connection.putrequest('POST', f'/api/predict?name={name}')
    connection.putheader('Content-Length', str(size))
    connection.putheader('Authorization', AUTH['Authorization'])
    connection.putheader('Expect', '100-continue')
    connection.endheaders()
    response = connection.getresponse()
    return response.status, json.loads(response.read())
  finally:
    connection.close()


def get(url: str, headers: dict | None = None) -> bytes:
  request = urllib.request.Request(url, headers=AUTH if headers is None else headers)
  with urllib.request.urlopen(request, timeout=30) as response:
    return response.read()


def answer(url: str, path: str, headers: dict, body: bytes | None = None) -> tuple[int, dict]:
  """Status and JSON of a request with exactly these headers (Host included)."""
  request = urllib.request.Request(f'{url}{path}', data=body, headers=headers,
                                   method='GET' if body is None else 'POST')
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      return response.status, json.loads(response.read()) if path.startswith('/api/') else {}
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_upload_gives_what_the_command_line_gives(server, clips, uploads_dir):
  url, predictor = server
  status, view = post(url, 'my song.wav', clips['swing'].read_bytes())
  assert status == 200, view
  expected, = predictor.predict_files([clips['swing']])
  assert view['file'] == 'my song.wav' and view['windows'] == 3
  assert view['top_k'] == expected['top_k'] and view['probabilities'] == expected['probabilities']
  assert view['timeline']['starts'] == [0.0, 5.0, 10.0]
  assert np.shape(view['timeline']['probabilities']) == (3, 4)
  png = base64.b64decode(view['spectrogram'].split(',', 1)[1])
  assert matplotlib.image.imread(io.BytesIO(png)).shape[:2] == (128, 3 * 216)
  npz = np.load(io.BytesIO(base64.b64decode(view['embeddings']['npz_base64'])))
  np.testing.assert_array_equal(npz['windows'], predictor.embed_files([clips['swing']]).windows[0])
  assert list(npz['files']) == ['my song.wav'] and view['embeddings']['shape'] == [3, 192]
  assert os.listdir(uploads_dir) == []  # the upload's folder is gone


def test_bad_uploads_are_refused_clearly_and_serving_goes_on(server, clips, uploads_dir):
  url, _ = server
  status, body = post(url, 'notes.txt', b'hello')
  assert status == 415 and body['error'].startswith('not an audio file name (.txt)')
  assert post(url, 'fake.mp3', b'not audio at all' * 64) == (
      422, {'error': 'not decodable audio: unrecognised format or corrupt data'})
  assert post(url, 'empty.wav', b'') == (400, {'error': 'empty file (0 bytes)'})
  status, body = post_declared(url, 'big.wav', LIMIT + 1)
  assert status == 413 and body['error'].startswith('file too large: the limit is 1 MB')
  too_big = b'\0' * (LIMIT + 1)
  chunks = (too_big[i:i + 65536] for i in range(0, len(too_big), 65536))  # no length given
  status, body = post(url, 'big.wav', chunks, {'Transfer-Encoding': 'chunked'})
  assert status == 413 and 'too large' in body['error']
  silent = clips['metal'].parent / 'silent.wav'
  sf.write(str(silent), np.zeros(3 * 22050, np.float32), 22050)
  assert post(url, 'silent.wav', silent.read_bytes())[1]['error'].startswith('silent clip')
  assert post(url, 'metal.flac', clips['metal'].read_bytes())[0] == 200  # still serving
  assert os.listdir(uploads_dir) == []


def test_several_uploads_at_once_while_the_page_answers(server, clips):
  _, predictor = server
  gated = GatedPredictor(predictor.model)
  answers: dict[str, tuple[int, dict]] = {}
  with serving(create_app(gated, LIMIT, workers=2, token=TOKEN)) as url:

    def upload(name: str) -> None:
      answers[name] = post(url, clips[name].name, clips[name].read_bytes())

    threads = [threading.Thread(target=upload, args=(n,)) for n in ('swing', 'metal', 'strings')]
    for t in threads:
      t.start()
    for _ in range(1200):  # both scoring threads busy with an upload each
      if gated.inside == 2:
        break
      time.sleep(0.05)
    assert gated.inside == 2
    info = json.loads(get(f'{url}/api/model'))  # the event loop still answers
    assert all(t.is_alive() for t in threads)
    gated.gate.set()
    for t in threads:
      t.join(timeout=120)
  assert info['classes'] == ['electronic', 'metal', 'strings', 'swing']
  assert gated.inside == 3
  for name, (status, view) in answers.items():
    assert status == 200 and view['file'] == clips[name].name
    expected, = predictor.predict_files([clips[name]])
    assert view['probabilities'] == expected['probabilities']


def test_page_loads_nothing_from_elsewhere(server):
  url, _ = server
  page = get(f'{url}/').decode()
  assert '/static/app.js' in page and '/static/style.css' in page
  for text in (page, get(f'{url}/static/app.js').decode(), get(f'{url}/static/style.css').decode()):
    assert 'http://' not in text and 'https://' not in text and '//cdn' not in text
  with pytest.raises(urllib.error.HTTPError):
    get(f'{url}/docs')  # FastAPI's API pages would load scripts from a CDN


def test_workdir_without_checkpoint_is_one_line(tmp_path):
  """config.json and data_info.json, but training never saved a checkpoint."""
  make_workdir(tmp_path / 'trained')
  empty = tmp_path / 'no_checkpoint'
  empty.mkdir()
  for name in ('config.json', 'data_info.json'):
    (empty / name).write_bytes((tmp_path / 'trained' / name).read_bytes())
  proc = subprocess.run([sys.executable, '-m', 'crnn_jax.serve', f'--workdir={empty}',
                         f'--port={free_port()}'], cwd=ROOT, capture_output=True, text=True,
                        timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.startswith('error: no checkpoint in ')
  assert proc.stderr.strip().count('\n') == 0


REFUSED_NAME = "refused: this server does not answer to the name "
REFUSED_TOKEN = "refused: /api/ needs this run's token"


def test_a_request_by_another_name_is_refused(server):
  """DNS rebinding: a name an attacker controls, pointed at 127.0.0.1, reaches
  the server with that name in the Host header."""
  url, _ = server
  port = url.rsplit(':', 1)[1]
  for path in ('/', '/static/app.js', '/api/model'):
    status, body = answer(url, path, {**AUTH, 'Host': f'rebound.example:{port}'})
    assert status == 403 and body['error'].startswith(REFUSED_NAME + "'rebound.example'")
  for host in ('localhost', 'LocalHost.', '127.0.0.1', '[::1]', '192.0.2.7'):  # IPs: no rebinding
    assert answer(url, '/api/model', {**AUTH, 'Host': f'{host}:{port}'})[0] == 200, host


def test_api_answers_only_with_the_runs_token(server, clips, uploads_dir):
  """Another site's page can POST here (a form needs no consent) but cannot
  read the token, which the page carries for its own script."""
  url, _ = server
  page = get(f'{url}/', headers={}).decode()  # the page itself needs no token
  assert re.search(r'<meta name="crnn-jax-token" content="([^"]*)">', page)[1] == TOKEN
  audio = clips['metal'].read_bytes()
  form = {'Origin': 'https://elsewhere.example', 'Content-Type': 'text/plain'}
  for headers, query in ((form, ''), ({'Authorization': 'Bearer not-it'}, ''),
                         ({}, '&token=not-it'), ({'Authorization': TOKEN}, '')):
    status, body = answer(url, f'/api/predict?name=metal.flac{query}', headers, audio)
    assert status == 403 and body['error'].startswith(REFUSED_TOKEN), (headers, query)
  assert answer(url, '/api/model', {})[0] == 403
  status, body = answer(url, f'/api/predict?name=metal.flac&token={TOKEN}', {}, audio)
  assert status == 200 and body['file'] == 'metal.flac'  # a script's other way
  assert os.listdir(uploads_dir) == []


@pytest.mark.parametrize('policy, name, status', [
    ({}, 'myhost.lan', 403),
    ({'host': 'myhost.lan'}, 'myhost.lan', 200),
    ({'host': '0.0.0.0'}, socket.gethostname(), 200),
    ({'allowed_hosts': ['Music.Lan']}, 'music.lan', 200),
    ({'allowed_hosts': ['*']}, 'anything.example', 200)])
def test_host_and_allowed_hosts_add_names(server, policy, name, status):
  _, predictor = server
  with serving(create_app(predictor, LIMIT, token=TOKEN, **policy)) as url:
    assert answer(url, '/api/model', {**AUTH, 'Host': name})[0] == status


def test_the_command_prints_the_token_scripts_send(tmp_path):
  workdir = make_workdir(tmp_path / 'wd')[3]
  with serve_command(f'--workdir={workdir}') as served:
    assert re.search(rf"curl -H 'Authorization: Bearer {served.token}' --data-binary @song.mp3 "
                     rf"'{served.url}/api/predict\?name=song.mp3'", served.printed)
    assert answer(served.url, '/api/model', {})[0] == 403
    status, info = answer(served.url, '/api/model', served.auth)
    assert status == 200 and info['classes'] == ['electronic', 'metal', 'strings', 'swing']
    assert served.token != TOKEN and len(served.token) >= 32
