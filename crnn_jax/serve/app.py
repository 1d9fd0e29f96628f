"""The web page's server: FastAPI over one Predictor.

``POST /api/predict?name=song.mp3`` takes the audio file as the request body
(the page sends it so; ``curl --data-binary @song.mp3``). The body is streamed
into a fresh temporary folder, never more than the size limit, and the folder
is deleted when the answer is ready. Scoring runs in a small thread pool, off
the event loop, so several uploads proceed at once and the page stays
responsive. Mistakes are answered with a one-line ``{"error": ...}``: an
unsupported extension (415), 0 bytes (400), too large (413), not decodable or
silent (422); the server goes on serving. Requests from elsewhere than the
page or a script with the run's token are refused (403, crnn_jax.serve.guard);
the page carries the token in its ``crnn-jax-token`` meta tag.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from crnn_jax.core import audio
from crnn_jax.core.errors import one_line
from crnn_jax.inference.predictor import Predictor
from crnn_jax.serve import guard, views

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
DEFAULT_MAX_UPLOAD_MB = 100
DEFAULT_WORKERS = 2
UPLOAD_PREFIX = 'crnn_jax_upload_'
TOKEN_META = '<meta name="crnn-jax-token" content="">'  # index.html's, filled in per run


class UploadRejected(Exception):
  """An upload answered with ``status`` and a one-line message."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def create_app(predictor: Predictor, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2**20,
               workers: int = DEFAULT_WORKERS, top_k: int = 5, token: str | None = None,
               host: str = '127.0.0.1', allowed_hosts: Sequence[str] = ()) -> FastAPI:
  """The app; its thread pool lives as long as the app runs.

  ``token`` (default: a new one, ``app.state.token``) is what /api/* requires;
  ``host`` (where it listens) and ``allowed_hosts`` say which Host headers it
  answers (crnn_jax.serve.guard).
  """
  pool = concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix='score')

  @contextlib.asynccontextmanager
  async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    pool.shutdown(wait=False, cancel_futures=True)

  # No /docs: FastAPI's API pages load their scripts from a CDN.
  app = FastAPI(title='crnn_jax', lifespan=lifespan, docs_url=None, redoc_url=None,
                openapi_url=None)
  app.state.token = token or guard.new_token()
  app.add_middleware(guard.PageGuard, token=app.state.token,
                     names=guard.host_names(host, allowed_hosts))
  app.mount('/static', StaticFiles(directory=STATIC_DIR), name='static')
  model = predictor.model
  index = _page_with_token(app.state.token)

  @app.get('/', include_in_schema=False)
  async def page() -> HTMLResponse:
    return HTMLResponse(index, headers={'Cache-Control': 'no-store'})  # a new token each run

  @app.get('/api/model')
  async def model_info() -> dict[str, Any]:
    return {**model.describe(), 'workdir': os.path.basename(model.workdir.rstrip(os.sep)),
            'max_upload_bytes': max_upload_bytes, 'extensions': list(audio.AUDIO_EXTENSIONS)}

  def score(path: str) -> dict[str, Any]:
    result, = predictor.predict_files([path], top_k=top_k, num_workers=1, details=True)
    return result

  @app.post('/api/predict')
  async def predict(request: Request, name: str = 'upload') -> JSONResponse:
    name = os.path.basename(name.replace('\\', '/'))[:200] or 'upload'
    try:
      extension = _audio_extension(name)
      _check_declared_size(request, max_upload_bytes)
      with tempfile.TemporaryDirectory(prefix=UPLOAD_PREFIX) as folder:
        path = os.path.join(folder, f'upload{extension}')
        await _receive(request, path, max_upload_bytes)
        result = await asyncio.get_running_loop().run_in_executor(pool, score, path)
        if 'error' in result:
          raise UploadRejected(422, result['error'])
        view = views.file_view(result, name, model)
    except UploadRejected as e:
      return JSONResponse({'error': str(e)}, status_code=e.status)
    except Exception as e:  # noqa: BLE001  one bad upload must not stop the server
      return JSONResponse({'error': one_line(f'unexpected error: {type(e).__name__}: {e}')[:300]},
                          status_code=500)
    return JSONResponse(view)

  return app


def _page_with_token(token: str) -> str:
  """index.html with this run's token, which its script sends with each request."""
  with open(os.path.join(STATIC_DIR, 'index.html'), encoding='utf-8') as f:
    page = f.read()
  assert TOKEN_META in page, 'index.html lost its token meta tag'
  return page.replace(TOKEN_META, TOKEN_META.replace('content=""', f'content="{token}"'))


def _audio_extension(name: str) -> str:
  extension = os.path.splitext(name)[1].lower()
  if extension not in audio.AUDIO_EXTENSIONS:
    raise UploadRejected(415, f'not an audio file name ({extension or "no extension"}): use '
                              f'{", ".join(audio.AUDIO_EXTENSIONS)}')
  return extension


def _too_large(limit: int) -> UploadRejected:
  return UploadRejected(413, f'file too large: the limit is {limit / 2**20:g} MB '
                             '(--max_upload_mb)')


def _check_declared_size(request: Request, limit: int) -> None:
  """Refuse before reading when the request says its size."""
  declared = request.headers.get('content-length')
  if declared is not None and declared.isdigit() and int(declared) > limit:
    raise _too_large(limit)


async def _receive(request: Request, path: str, limit: int) -> int:
  """Streams the body into ``path``, at most ``limit`` bytes; returns the size.

  A body without a declared length that runs over is read on (not written)
  up to twice the limit, so a client still sending gets the 413, not a
  broken connection; beyond that the connection is dropped.
  """
  size = 0
  async with await anyio.open_file(path, 'wb') as f:
    async for chunk in request.stream():
      size += len(chunk)
      if size <= limit:
        await f.write(chunk)
      elif size > 2 * limit:
        break
  if size > limit:
    raise _too_large(limit)
  if size == 0:
    raise UploadRejected(400, 'empty file (0 bytes)')
  return size
