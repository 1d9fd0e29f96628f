"""30-second previews: ``previews/<id[0:2]>/<id>.mp3`` beside the table.

Apps created since 2024-11-27 get null preview URLs; their tracks are kept
(``has_preview`` 0) for ``python -m data_prep match`` to give them local audio.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import requests
from tqdm import tqdm

from crnn_jax.core import storage
from data_prep.spotify.errors import retry_wait

MAX_PREVIEW_WAIT = 60.0  # longest Retry-After honoured for a preview download (s)


def preview_path(track_id: str) -> str:
  """Where a preview goes, relative to the output folder."""
  return os.path.join('previews', track_id[:2], track_id + '.mp3')


def download_previews(rows: list[dict[str, Any]], out_dir: str, session: requests.Session,
                      sleep: Callable[[float], None] = time.sleep, max_retries: int = 5,
                      progress: bool = True) -> dict[str, int]:
  """Fetches missing previews (atomic writes; present files are skipped) and
  fills each row's ``path``."""
  counts = {'downloaded': 0, 'present': 0, 'failed': 0, 'no_preview': 0}
  for r in tqdm(rows, desc='previews', unit='file', disable=not progress, file=sys.stderr):
    if not r.get('preview_url'):
      counts['no_preview'] += 1
      continue
    rel = preview_path(r['id'])
    path = os.path.join(out_dir, rel)
    if os.path.exists(path) and os.path.getsize(path) > 0:
      counts['present'] += 1
    elif _download(r['preview_url'], path, session, sleep, max_retries):
      counts['downloaded'] += 1
    else:
      counts['failed'] += 1
      continue
    r['path'] = rel
  return counts


def _download(url: str, path: str, session: requests.Session, sleep: Callable[[float], None],
              max_retries: int) -> bool:
  for attempt in range(max_retries + 1):
    try:
      resp = session.get(url, timeout=30)
    except requests.RequestException:  # network trouble: back off, then give up on this file
      resp = None
    if resp is not None and resp.status_code == 200 and resp.content:
      with storage.atomic_write(path, 'wb') as f:
        f.write(resp.content)
      return True
    retryable = resp is None or resp.status_code == 429 or resp.status_code >= 500
    if not retryable or attempt >= max_retries:
      return False
    retry_after = resp.headers.get('Retry-After') if resp is not None else None
    sleep(min(retry_wait(retry_after, attempt), MAX_PREVIEW_WAIT))
  return False
