"""What Spotify's errors mean for a collection run.

Three kinds of trouble, told apart here once:
  - a *stop*: nothing can work around it (wrong credentials, an owner without
    Premium, a user not on the app's list); the run ends with one line and
    everything finished stays in the cache;
  - a *refusal*: this endpoint or this item is not served (HTTP 400, 403,
    404); the caller decides what to do instead, and the refusal is cached;
  - a *retry*: rate limits (429), server trouble (5xx), a dropped connection.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import math

MAX_BACKOFF = 60.0  # longest exponential backoff between retries (s)
RERUN = 'rerun the same command later (finished requests are kept)'


class CollectorError(Exception):
  """A stop the user must act on; its message is one line and holds no secret."""


@dataclasses.dataclass(frozen=True)
class Refusal:
  """An HTTP 4xx answer to one request: the endpoint or the item is not served."""
  status: int
  message: str

  def __str__(self) -> str:
    return f'HTTP {self.status}' + (f' {self.message!r}' if self.message else '')


def one_line(text: object, limit: int = 200) -> str:
  """The useful part of an error text, on one line (spotipy puts the URL first)."""
  lines = [line.strip() for line in str(text or '').splitlines() if line.strip()]
  return (lines[-1] if lines else '')[:limit]


def stop_reason(status: int, message: str) -> str | None:
  """The one-line reason to stop the whole run, or None when only this request
  is refused. Matches Spotify's texts, not bare status codes: a 403 is also
  what a removed endpoint answers."""
  text = message.lower()
  if 'premium' in text:  # a plain-text or JSON 403 on every call since 2026
    return ("Spotify refuses every request: the app's owner needs an active Premium "
            f'subscription (development-mode apps, since 2026); Spotify says {message!r}. '
            f'Renew it, wait a few hours, then {RERUN}')
  if 'not registered' in text:
    return ('Spotify refuses this user: add the account under User Management in the app\'s '
            'Developer Dashboard (development mode allows 5 users); Spotify says '
            f'{message!r}; then {RERUN}')
  if status == 401:
    return (f'Spotify rejects the access token even after renewing it (HTTP 401 {message!r}); '
            'check SPOTIPY_CLIENT_ID/SPOTIPY_CLIENT_SECRET and, with --auth=user, the login')
  return None


def credentials_error(detail: str, status: int | None) -> CollectorError:
  where = f'HTTP {status}: {detail}' if status else detail
  return CollectorError(
      f'Spotify refused the app\'s credentials ({where}); check SPOTIPY_CLIENT_ID/'
      'SPOTIPY_CLIENT_SECRET (and SPOTIPY_REDIRECT_URI with --auth=user); since 2026 '
      'development-mode apps also need the owner to have Premium')


def retry_wait(retry_after: str | None, attempt: int) -> float:
  """Seconds to wait before a retry: Retry-After in seconds or as an HTTP-date
  (RFC 9110 allows both), else (absent or unparsable) exponential backoff."""
  backoff = min(2.0 ** attempt, MAX_BACKOFF)
  if not retry_after:
    return backoff
  try:
    wait = float(retry_after)
  except ValueError:
    try:
      when = email.utils.parsedate_to_datetime(retry_after)
    except (TypeError, ValueError, IndexError):
      return backoff
    if when.tzinfo is None:  # an HTTP-date is GMT
      when = when.replace(tzinfo=datetime.UTC)
    wait = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
  return max(0.0, wait) if math.isfinite(wait) else backoff
