"""Who the web page answers: its own page, and scripts holding this run's token.

The server listens on this machine only, yet any site its user visits can
send it requests. Two refusals, as Jupyter's server makes them:

- DNS rebinding: a name an attacker controls first points at their server,
  then at 127.0.0.1; the browser then treats this server as the attacker's
  site and lets their page read its answers. The requests still carry the
  attacker's name in their ``Host`` header, so only the names this server is
  known by are answered: IP addresses (a browser that sends one connected to
  it), ``localhost``, the ``--host`` name, this machine's names when it
  listens on every address, and ``--allowed_hosts``.
- Cross-site requests: a page elsewhere can POST to ``/api/predict`` (a form,
  or a fetch the browser sends without asking this server) and make it decode
  files. ``/api/*`` answers only requests with this run's token, a random
  string the command prints and the page carries, which other sites cannot
  read (the browser keeps the pages of different origins apart). Scripts send
  it as the header ``Authorization: Bearer TOKEN`` or as ``?token=TOKEN``.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import urllib.parse
from collections.abc import Iterable
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

ANY_HOST = '*'  # --allowed_hosts=*: every Host header (no protection against DNS rebinding)
EVERY_ADDRESS = ('', '0.0.0.0', '::')  # --host values that listen on every interface
API_PREFIX = '/api/'


def new_token() -> str:
  """A run's token: 32 URL-safe characters from the system's secure random source."""
  return secrets.token_urlsafe(24)


def host_names(host: str, allowed_hosts: Iterable[str] = ()) -> frozenset[str]:
  """The names (not IP addresses) a server listening on ``host`` answers to."""
  names = {'localhost', *(_normal(n) for n in allowed_hosts if n.strip())}
  if host in EVERY_ADDRESS:
    names |= {_normal(socket.gethostname()), _normal(socket.getfqdn())}
  elif not _is_ip(host):
    names.add(_normal(host))
  return frozenset(names)


def _normal(name: str) -> str:
  return name.strip().lower().rstrip('.')


def _is_ip(name: str) -> bool:
  try:
    ipaddress.ip_address(name)
  except ValueError:
    return False
  return True


def host_of(header: str) -> str:
  """The name or address in a Host header, without the port ('[::1]:8000' -> '::1')."""
  header = header.strip()
  if header.startswith('['):
    return header[1:header.find(']')] if ']' in header else header
  return _normal(header.rsplit(':', 1)[0] if header.count(':') == 1 else header)


class PageGuard:
  """ASGI middleware: refuses a Host this server is not known by, and /api/*
  requests without the token, with 403 and a one-line ``{"error": ...}``."""

  def __init__(self, app: Any, token: str, names: frozenset[str]):
    self.app, self.token, self.names = app, token, names

  async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
    refusal = self.refusal(scope) if scope['type'] == 'http' else None
    if refusal:
      await JSONResponse({'error': refusal}, status_code=403)(scope, receive, send)
      return
    await self.app(scope, receive, send)

  def refusal(self, scope: dict[str, Any]) -> str | None:
    headers = Headers(scope=scope)
    host = host_of(headers.get('host', ''))
    if not (_is_ip(host) or host in self.names or ANY_HOST in self.names):
      return (f'refused: this server does not answer to the name {host!r} '
              '(python -m crnn_jax.serve --allowed_hosts adds names)')
    if scope['path'].startswith(API_PREFIX) and not self._has_token(scope, headers):
      return ("refused: /api/ needs this run's token, printed by python -m crnn_jax.serve: "
              "send the header 'Authorization: Bearer TOKEN' or add ?token=TOKEN")
    return None

  def _has_token(self, scope: dict[str, Any], headers: Headers) -> bool:
    scheme, _, given = headers.get('authorization', '').partition(' ')
    if scheme.lower() != 'bearer':
      query = urllib.parse.parse_qs(scope.get('query_string', b'').decode('latin-1'))
      given = (query.get('token') or [''])[0]
    return secrets.compare_digest(given.strip().encode(), self.token.encode())
