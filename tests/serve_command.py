"""``python -m crnn_jax.serve`` as a user starts it, for the tests that need the command.

The command prints this run's token (scripts send it; /api/ refuses requests
without it) and then starts listening; ``serve_command`` yields once the page
answers, with the URL, the token and everything printed so far.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

from conftest import ROOT

TOKEN_LINE = re.compile(r"Authorization: Bearer ([\w-]+)'")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@dataclasses.dataclass
class Served:
  url: str
  token: str
  printed: str  # the command's output up to its token line

  @property
  def auth(self) -> dict[str, str]:
    return {'Authorization': f'Bearer {self.token}'}


@contextlib.contextmanager
def serve_command(*args: str, seconds: float = 300) -> Iterator[Served]:
  """The command with ``args`` on a free port, until the block ends (then SIGTERM)."""
  port = free_port()
  proc = subprocess.Popen([sys.executable, '-m', 'crnn_jax.serve', *args, f'--port={port}'],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    printed = ''
    while not TOKEN_LINE.search(printed):  # the model loads and compiles first
      line = proc.stdout.readline()
      assert line, f'the server stopped: {printed}'
      printed += line
    url = f'http://127.0.0.1:{port}'
    _wait_for_page(url, proc, seconds)
    yield Served(url, TOKEN_LINE.search(printed)[1], printed)
  finally:
    proc.terminate()
    proc.wait(timeout=30)


def _wait_for_page(url: str, proc: subprocess.Popen, seconds: float) -> None:
  """uvicorn listens just after the token line is printed; the page needs no token."""
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    with contextlib.suppress(OSError):
      urllib.request.urlopen(f'{url}/', timeout=5).read()
      return
    assert proc.poll() is None, f'the server stopped with code {proc.returncode}'
    time.sleep(0.1)
  raise AssertionError(f'the server did not answer within {seconds:.0f} s')
