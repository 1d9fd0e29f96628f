"""A local fake of MusicBrainz's XML web service (ws/2), for tests and demos.

  python -m data_prep.testing.fake_musicbrainz --port=8766

serves artist search (``/ws/2/artist/?query=artist:(...)``, with
``ext:score``) and lookup (``/ws/2/artist/<mbid>?inc=tags``) over real HTTP
in MusicBrainz's XML (the mmd-2.0 namespace, without which musicbrainzngs
cannot parse it), and enforces what MusicBrainz asks of clients: a
User-Agent (403 without one) and at most one request per ``min_interval``
seconds (503 otherwise, as musicbrainz.org answers). ``fail`` injects 503s.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import threading
import time
import urllib.parse
import uuid
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from data_prep.testing import spotify_catalogue
from data_prep.testing.server import LocalServer, Response

NS = 'http://musicbrainz.org/ns/mmd-2.0#'
EXT = 'http://musicbrainz.org/ns/ext#-2.0'
RATE_TEXT = ('Your requests are exceeding the allowable rate limit. Please see '
             'https://musicbrainz.org/doc/XML_Web_Service/Rate_Limiting for more information.')


@dataclasses.dataclass
class MBArtist:
  id: str
  name: str
  tags: dict[str, int]
  disambiguation: str = ''
  type: str = 'Group'


@dataclasses.dataclass
class Seen:
  """One request as the server saw it."""
  at: float
  path: str
  query: dict[str, str]
  user_agent: str


class FakeMusicBrainz(LocalServer):
  """Artists served as MusicBrainz does; requests recorded with their times."""

  def __init__(self, artists: list[MBArtist], min_interval: float = 1.0):
    self.artists = {a.id: a for a in artists}
    self.min_interval = min_interval
    self.requests: list[Seen] = []
    self.too_fast = 0  # requests refused for breaking the rate limit
    self.failures = 0  # 503s still to inject
    self.lock = threading.Lock()

  def fail(self, times: int = 1) -> None:
    self.failures += times

  def handle(self, method: str, url: str, headers: Any, body: bytes) -> Response:
    status, xml = self._answer(url, headers.get('User-Agent', ''))
    return status, {'Content-Type': 'application/xml; charset=UTF-8'}, xml

  def _answer(self, url: str, user_agent: str) -> tuple[int, bytes]:
    parsed = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parsed.query))
    with self.lock:
      now = time.monotonic()
      last = self.requests[-1].at if self.requests else None
      self.requests.append(Seen(now, parsed.path, query, user_agent))
      if not user_agent.strip():
        return 403, _error('Please identify your application with a User-Agent header.')
      if last is not None and now - last < self.min_interval:
        self.too_fast += 1
        return 503, _error(RATE_TEXT)
      if self.failures:
        self.failures -= 1
        return 503, _error(RATE_TEXT)
    if parsed.path == '/ws/2/artist/' or parsed.path == '/ws/2/artist':
      return 200, self.search(query.get('query', ''), int(query.get('limit', 25)))
    match = re.fullmatch(r'/ws/2/artist/([0-9a-f-]{36})', parsed.path)
    if match and match.group(1) in self.artists:
      return 200, _document(_artist_xml(self.artists[match.group(1)], None))
    return 404, _error('Not Found')

  def search(self, query: str, limit: int) -> bytes:
    """Artists scored against ``artist:(name)``: 100 for the name itself, less for
    names sharing words (a fuzzy full-text search, roughly)."""
    found = re.fullmatch(r'artist:\((.*)\)', query)
    wanted = re.sub(r'\\(.)', r'\1', found.group(1) if found else query).casefold()
    words = set(wanted.split())
    scored = []
    for a in self.artists.values():
      name = a.name.casefold()
      score = 100 if name == wanted else int(90 * len(words & set(name.split())) /
                                             max(len(words), 1))
      if score >= 40:
        scored.append((score, a))
    scored.sort(key=lambda x: -x[0])
    body = ''.join(_artist_xml(a, s) for s, a in scored[:limit])
    return _document(f'<artist-list count="{len(scored)}" offset="0">{body}</artist-list>')


def _artist_xml(a: MBArtist, score: int | None) -> str:
  attrs = f' id="{a.id}" type={quoteattr(a.type)}'
  if score is not None:
    attrs += f' ext:score="{score}"'
  inner = f'<name>{escape(a.name)}</name><sort-name>{escape(a.name)}</sort-name>'
  if a.disambiguation:
    inner += f'<disambiguation>{escape(a.disambiguation)}</disambiguation>'
  if a.tags:
    inner += f'<tag-list count="{len(a.tags)}">' + ''.join(
        f'<tag count="{n}"><name>{escape(t)}</name></tag>' for t, n in a.tags.items())
    inner += '</tag-list>'
  return f'<artist{attrs}>{inner}</artist>'


def _document(inner: str) -> bytes:
  return (f'<?xml version="1.0" encoding="UTF-8"?><metadata xmlns="{NS}" xmlns:ext="{EXT}">'
          f'{inner}</metadata>').encode()


def _error(text: str) -> bytes:
  return (f'<?xml version="1.0" encoding="UTF-8"?><error><text>{escape(text)}</text>'
          '<text>For usage, please see: https://musicbrainz.org/development/mmd</text>'
          '</error>').encode()


def catalogue_artists(cat: spotify_catalogue.Catalogue) -> list[MBArtist]:
  """The fake Spotify catalogue's artists as MusicBrainz would know them (its
  genre tags with votes), so both fakes describe one world."""
  out = []
  for a in cat.artists.values():
    mbid = str(uuid.uuid5(uuid.NAMESPACE_URL, 'fake-musicbrainz:' + a.id))
    out.append(MBArtist(mbid, a.name, {g: 10 - k for k, g in enumerate(a.genres)}))
  return out


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog='python -m data_prep.testing.fake_musicbrainz',
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--port', type=int, default=8766)
  p.add_argument('--min_interval', type=float, default=1.0)
  args = p.parse_args(argv)
  fake = FakeMusicBrainz(catalogue_artists(spotify_catalogue.metal_catalogue()),
                         args.min_interval).start(args.port)
  fake.serve_until_interrupted(
      f'fake MusicBrainz at {fake.url} (the artists of the fake Spotify metal catalogue); '
      f'label a library with\n  python -m data_prep musicbrainz --library=MUSIC '
      f'--out=labels.csv --server={fake.url} --rate={args.min_interval}')


if __name__ == '__main__':
  main()
