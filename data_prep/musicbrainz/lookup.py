"""Artists on MusicBrainz, through musicbrainzngs, cached.

MusicBrainz asks for at most one request per second per address and a
meaningful User-Agent (``crnn_jax-data_prep/<version> python-musicbrainzngs/
0.7.1 ( <contact> )``); both are kept here, and faster rates are refused
against musicbrainz.org itself. The pace is kept by :class:`MusicBrainz`, not
by musicbrainzngs's limiter: 0.7.1's sleeps requests-per-interval where it
means interval-per-request, right only at exactly one second. Each answer is
stored in the cache at once, so a rerun asks only what was not answered.

musicbrainzngs 0.7.1 rejects ``includes=['genres']`` and drops the
``<genre-list>`` of the XML it parses; artist *tags* carry the same names
(genres are tags on MusicBrainz's curated list) with vote counts, and are
what is read, from the search results (a lookup with ``inc=tags`` only when
a search result has none).
"""

from __future__ import annotations

import json
import time
import unicodedata
import urllib.parse
from collections.abc import Callable
from typing import Any

import musicbrainzngs

from data_prep.cache import OK, AnswerCache

USER_AGENT = ('crnn_jax-data_prep', '0.1.0')
MUSICBRAINZ = 'https://musicbrainz.org'
SEARCH_LIMIT = 10


class LookupStop(Exception):
  """MusicBrainz cannot be reached or refuses us; one line, a rerun resumes."""


def normalise(name: str) -> str:
  """Case, accents and spacing removed: how names are compared."""
  text = unicodedata.normalize('NFKD', name.casefold())
  return ' '.join(''.join(c for c in text if not unicodedata.combining(c)).split())


class MusicBrainz:
  """Cached artist searches, at most one request per ``interval`` seconds.

  Sets musicbrainzngs's module-wide user agent and host (one server per process).
  """

  def __init__(self, cache: AnswerCache, server: str = MUSICBRAINZ, interval: float = 1.0,
               contact: str = '', sleep: Callable[[float], None] = time.sleep):
    url = urllib.parse.urlsplit(server if '://' in server else 'https://' + server)
    if (url.hostname or '').endswith('musicbrainz.org') and interval < 1.0:
      raise ValueError('musicbrainz.org allows one request per second: --rate must be >= 1')
    musicbrainzngs.set_useragent(*USER_AGENT, contact or None)
    musicbrainzngs.set_hostname(url.netloc, use_https=url.scheme == 'https')
    musicbrainzngs.set_rate_limit(False)  # self.interval keeps the pace
    self.cache = cache
    self.interval = interval
    self.sleep = sleep
    self.last: float | None = None  # time.monotonic() of the last request
    self.requests = 0

  def candidates(self, name: str) -> list[dict[str, Any]]:
    """Artists a search by name finds: id, name, score, disambiguation, tags."""
    key = json.dumps(['search', normalise(name)])
    hit = self.cache.get(key)
    if hit is not None:
      return hit[1] if hit[0] == OK else []
    try:
      found = self._ask(musicbrainzngs.search_artists, artist=name, limit=SEARCH_LIMIT)
    except musicbrainzngs.ResponseError as e:  # 400/404: this name cannot be searched
      self.cache.put(key, _status(e), str(e)[:200])
      return []
    out = [_candidate(a) for a in found.get('artist-list', [])]
    self.cache.put(key, OK, out)
    return out

  def tags(self, mbid: str) -> list[tuple[str, int]]:
    """An artist's tags by lookup (inc=tags), cached."""
    key = json.dumps(['tags', mbid])
    hit = self.cache.get(key)
    if hit is None:
      try:
        artist = self._ask(musicbrainzngs.get_artist_by_id, mbid, includes=['tags'])['artist']
        hit = (OK, _candidate(artist)['tags'])
      except musicbrainzngs.ResponseError as e:
        hit = (_status(e), str(e)[:200])
      self.cache.put(key, *hit)
    return [tuple(t) for t in hit[1]] if hit[0] == OK else []

  def _ask(self, call: Any, *args: Any, **kwargs: Any) -> dict:
    if self.last is not None:
      self.sleep(max(0.0, self.interval - (time.monotonic() - self.last)))
    self.requests += 1
    try:
      return call(*args, **kwargs)
    except musicbrainzngs.ResponseError:
      raise
    except (musicbrainzngs.NetworkError, musicbrainzngs.AuthenticationError,
            musicbrainzngs.WebServiceError) as e:
      raise LookupStop(f'MusicBrainz did not answer ({type(e).__name__}: '
                       f'{str(e).splitlines()[0][:160]}); rerun the same command later '
                       '(finished lookups are kept)') from None
    except ValueError as e:  # XML without MusicBrainz's namespace: not a MusicBrainz server
      raise LookupStop(f'the server does not answer as MusicBrainz does ({e}); check '
                       '--server') from None
    finally:
      self.last = time.monotonic()


def _status(e: musicbrainzngs.ResponseError) -> int:
  return int(getattr(getattr(e, 'cause', None), 'code', 0) or 400)


def _candidate(artist: dict) -> dict[str, Any]:
  return {'id': artist['id'], 'name': artist.get('name', ''),
          'score': int(artist.get('ext:score', 100) or 0),
          'disambiguation': artist.get('disambiguation', ''),
          'tags': [(t['name'], int(t.get('count', 0) or 0)) for t in artist.get('tag-list', [])]}
