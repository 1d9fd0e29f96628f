"""The HTTP layer: spotipy behind the answer cache, retries and token renewal.

Every request goes through :meth:`Client.get`, which returns the answer or a
:class:`~data_prep.spotify.errors.Refusal` and stores either in the cache, so
a rerun replays both without asking again. HTTP 429 waits for Retry-After (in
seconds or as an HTTP-date); 5xx and dropped connections back off
exponentially; a 401 renews the token once; a stop (errors.stop_reason) ends
the run. spotipy gets a plain ``requests.Session`` (its own urllib3 retries
would swallow Retry-After) and keeps its token in memory only.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import requests
import spotipy

from data_prep.cache import OK, AnswerCache
from data_prep.spotify import errors
from data_prep.spotify.errors import RERUN, CollectorError, Refusal

Answer = Any  # a decoded JSON body, or a Refusal


class Client:
  """One Spotify app session: cached, retrying, saying each API fact once."""

  def __init__(self, sp: spotipy.Spotify, cache: AnswerCache, *, auth: str = 'client',
               sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] = print,
               max_wait: float = 3600.0, max_retries: int = 6):
    self.sp = sp
    self.cache = cache
    self.auth = auth  # part of every key: a user token is served more than an app token
    self.sleep = sleep
    self.log = log
    self.max_wait = max_wait
    self.max_retries = max_retries
    self.requests = 0  # HTTP requests made this run (cache hits not counted)
    self.notices: dict[str, str] = {}  # what was said this run, by key

  # ------------------------------------------------------------ requests

  def get(self, method: str, *args: Any, **kwargs: Any) -> Answer:
    """``sp.<method>(*args, **kwargs)``: the answer or a Refusal, cached."""
    key = json.dumps([self.auth, method, args, kwargs], sort_keys=True)
    hit = self.cache.get(key)
    if hit is not None:
      status, body = hit
      return body if status == OK else Refusal(status, body)
    answer = self._live(method, args, kwargs)
    if isinstance(answer, Refusal):
      self.cache.put(key, answer.status, answer.message)
    else:
      self.cache.put(key, OK, answer)
    return answer

  def _live(self, method: str, args: tuple, kwargs: dict) -> Answer:
    renew = renewed = False  # a 401 renews the token once per request
    for attempt in range(self.max_retries + 1):
      try:
        if renew:
          self._renew_token()
          renew = False
        self.requests += 1
        with warnings.catch_warnings():  # spotipy warns on endpoints Spotify deprecated
          warnings.simplefilter('ignore', DeprecationWarning)
          return getattr(self.sp, method)(*args, **kwargs)
      except spotipy.SpotifyException as e:
        status, message = int(e.http_status or 0), errors.one_line(e.msg)
        message = '' if message == 'None' else message  # spotipy's text for an empty body
        if status == 429:
          self._wait_rate_limit(errors.retry_wait(_header(e.headers, 'Retry-After'), attempt))
        elif status >= 500 or status == 0:
          self._back_off(attempt, f'HTTP {status}', method)
        elif status == 401 and not renewed:
          renew = renewed = True
          self.say_once('token', f'access token refused early (HTTP 401 {message!r}): renewed')
        else:
          stop = errors.stop_reason(status, message)
          if stop:
            raise CollectorError(stop) from None
          return Refusal(status, message)
      except spotipy.oauth2.SpotifyOauthError as e:
        self._token_trouble(e, attempt)
      except (requests.ConnectionError, requests.Timeout) as e:
        self._back_off(attempt, type(e).__name__, method)
    raise CollectorError(f'Spotify {method}: still failing after {self.max_retries} retries; '
                         f'{RERUN}')

  def _renew_token(self) -> None:
    auth = self.sp.auth_manager
    token = auth.cache_handler.get_cached_token() or {}
    if token.get('refresh_token'):  # a user login: refresh, do not log in again
      auth.refresh_access_token(token['refresh_token'])
    else:
      auth.get_access_token(check_cache=False)

  def _token_trouble(self, e: spotipy.oauth2.SpotifyOauthError, attempt: int) -> None:
    """The token request failed: retry rate limits and outages, else stop."""
    response = getattr(e.__context__, 'response', None)  # spotipy's HTTPError
    status = getattr(response, 'status_code', None)
    if status == 429:
      self._wait_rate_limit(errors.retry_wait(_header(response.headers, 'Retry-After'), attempt))
      return
    if status is not None and status >= 500 and 'premium' not in str(e).lower():
      self._back_off(attempt, f'HTTP {status} from the token endpoint', 'token')
      return
    detail = ': '.join(errors.one_line(x) for x in (e.error, e.error_description) if x)
    stop = errors.stop_reason(status or 0, detail) if 'premium' in detail.lower() else None
    raise (CollectorError(stop) if stop else errors.credentials_error(detail, status)) from None

  def _back_off(self, attempt: int, what: str, method: str) -> None:
    if attempt >= self.max_retries:
      raise CollectorError(f'Spotify keeps failing ({what}) on {method} after '
                           f'{self.max_retries} retries; {RERUN}') from None
    self.sleep(min(2.0 ** attempt, errors.MAX_BACKOFF))

  def _wait_rate_limit(self, wait: float) -> None:
    """Sleeps through an HTTP 429; a wait longer than max_wait stops the run."""
    if wait > self.max_wait:
      raise CollectorError(f'Spotify rate limit: asked to wait {wait:.0f} s (more than '
                           f'--max_wait {self.max_wait:.0f} s); {RERUN}') from None
    self.log(f'Spotify API: rate limited (HTTP 429), waiting {wait:.0f} s')
    self.sleep(wait)

  # ------------------------------------------------------------ what the API is like

  def say_once(self, key: str, text: str) -> None:
    """A fact about this API, said once per run in one line."""
    if key not in self.notices:
      self.notices[key] = text
      self.log('Spotify API: ' + text)

  def refuse(self, endpoint: str, refusal: Refusal, instead: str) -> None:
    """Remembers (in the cache) that an endpoint is refused, and says so once."""
    text = f'{endpoint} refused ({refusal}): {instead}'
    self.cache.set_fact('refused:' + endpoint, text)
    self.say_once('refused:' + endpoint, text)

  def is_refused(self, endpoint: str) -> bool:
    """Whether an endpoint was refused, this run or an earlier one (said once)."""
    text = self.cache.fact('refused:' + endpoint)
    if text is not None:
      self.say_once('refused:' + endpoint, text + ' [known from an earlier run; '
                    '--retry_refused asks again]')
    return text is not None

  def fact(self, name: str) -> str | None:
    return self.cache.fact(name)

  def set_fact(self, name: str, value: str) -> None:
    self.cache.set_fact(name, value)

  def close(self) -> None:
    self.cache.close()


def _header(headers: Any, name: str) -> str | None:
  headers = headers or {}
  return headers.get(name) or headers.get(name.lower())
