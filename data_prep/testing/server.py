"""A local HTTP server on 127.0.0.1 in a background thread, for the fakes."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from typing import Any, Self

Response = tuple[int, dict[str, str], bytes]  # status, headers, body


class LocalServer:
  """Serves ``self.handle(method, path, headers, body)`` over real HTTP."""

  url = ''
  server: http.server.ThreadingHTTPServer | None = None

  def handle(self, method: str, path: str, headers: Any, body: bytes) -> Response:
    raise NotImplementedError

  def start(self, port: int = 0) -> Self:
    """Listens on ``port`` (0: any free one); ``self.url`` says where."""
    handler = type('Handler', (_Handler,), {'respond': staticmethod(self.handle)})
    self.server = http.server.ThreadingHTTPServer(('127.0.0.1', port), handler)
    self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
    threading.Thread(target=self.server.serve_forever, daemon=True).start()
    return self

  def stop(self) -> None:
    if self.server is not None:
      self.server.shutdown()
      self.server.server_close()
      self.server = None

  def __enter__(self) -> Self:
    return self.start()

  def __exit__(self, *exc: object) -> None:
    self.stop()

  def serve_until_interrupted(self, message: str) -> None:
    """For the command line: prints how to use it, serves until Ctrl-C."""
    print(message + '\nCtrl-C stops it.', flush=True)
    try:
      threading.Event().wait()
    except KeyboardInterrupt:
      self.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
  respond: Callable[[str, str, Any, bytes], Response]

  def _serve(self) -> None:
    length = int(self.headers.get('Content-Length') or 0)
    status, headers, body = self.respond(self.command, self.path, self.headers,
                                         self.rfile.read(length) if length else b'')
    self.send_response(status)
    for name, value in headers.items():
      self.send_header(name, value)
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  do_GET = do_POST = do_PUT = do_DELETE = _serve

  def log_message(self, *args: Any) -> None:  # quiet
    pass
