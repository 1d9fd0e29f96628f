"""The Web API's endpoints as the collector needs them, in every era.

Three eras of the same API (docs/reference.md section 1, docs in data_prep/README.md):
  2020      extended quota: everything the reference used;
  2024-11   new apps lose audio features and analysis, related artists,
            previews and Spotify's editorial playlists;
  2026      development mode (new apps from 2026-02-11): batch lookups, other
            users' playlist items, popularity gone; search pages of at most 10;
            playlist ``/tracks`` renamed ``/items``; the owner needs Premium.
Which era an app lives in is not announced (existing apps kept some endpoints
after the postponed 2026-03-09 migration, and enforcement varies), so no
adapter assumes one: each asks the richest call first and, when it is
refused, says so once (Client.refuse), remembers it in the cache and uses
what is still served.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from tqdm import tqdm

from data_prep.spotify.client import Client
from data_prep.spotify.errors import Refusal
from data_prep.spotify.table import Report

SEARCH_LIMITS = (50, 10)  # page sizes tried: the reference's, development mode's (2026)
PLAYLIST_LIMITS = (100, 50)  # /tracks (before 2026), /items
ALBUM_LIMITS = (50, 10)  # artist albums: at most 10 in development mode (reported, unverified)
ALBUM_TRACK_LIMITS = (50,)
REMOVABLE = (403, 404)  # what a removed endpoint answers (both are reported)

BATCH_ARTISTS = 'GET /artists?ids='
BATCH_TRACKS = 'GET /tracks?ids='
AUDIO_FEATURES = 'GET /audio-features'
AUDIO_ANALYSIS = 'GET /audio-analysis/{id}'
RELATED = 'GET /artists/{id}/related-artists'
ARTIST_ALBUMS = 'GET /artists/{id}/albums'
ITEMS = 'GET /playlists/{id}/items'
LEGACY_TRACKS = 'GET /playlists/{id}/tracks'


class Refused(Exception):
  """A paged endpoint refused a page (the refusal is in ``refusal``)."""

  def __init__(self, refusal: Refusal):
    super().__init__(str(refusal))
    self.refusal = refusal


class Catalog:
  """Era-aware access to artists, albums, tracks and playlists."""

  def __init__(self, client: Client, report: Report, progress: bool = True):
    self.client = client
    self.report = report
    self.progress = progress

  def _bar(self, items: Sequence[Any], desc: str) -> Iterable[Any]:
    return tqdm(items, desc=desc, unit='req', disable=not self.progress or len(items) < 2,
                file=sys.stderr, leave=False)

  # ------------------------------------------------------------ paging

  def pages(self, endpoint: str, method: str, *args: Any, limits: Sequence[int], max_items: int,
            items_key: str | None = None, **kwargs: Any) -> Iterator[dict]:
    """Items of a paged endpoint by offset, up to max_items, null entries
    dropped; lazy, so a caller that has enough asks no further. A refusal
    raises Refused.

    A 400 naming the limit lowers the page size for good (development mode
    rejects search limits above 10 with 'Invalid limit' instead of sending
    a shorter page); a 400 after the first page ends the paging (an offset
    cap: 1,000 for search in the older documentation; unverified for 2026).
    """
    known = self.client.fact('limit:' + endpoint)
    limit = int(known or limits[0])
    if known:
      self.client.say_once('limit:' + endpoint, f'{endpoint} pages hold at most {limit} items: '
                           'paging by it [known from an earlier run]')
    offset = 0
    while offset < max_items:
      page = self.client.get(method, *args, limit=min(limit, max_items - offset), offset=offset,
                             **kwargs)
      if isinstance(page, Refusal):
        if page.status == 400 and 'limit' in page.message.lower() and limit > limits[-1]:
          limit = limits[-1]
          self.client.set_fact('limit:' + endpoint, str(limit))
          self.client.say_once('limit:' + endpoint, f'{endpoint} pages hold at most {limit} '
                               f'items ({page} for more): paging by {limit}')
          continue
        if page.status == 400 and offset > 0:
          self.client.say_once('offset:' + endpoint, f'{endpoint} stops at offset {offset} '
                               f'({page}): later results are out of reach')
          return
        raise Refused(page)
      if items_key:
        page = page.get(items_key) or {}
      batch = page.get('items') or []
      yield from (x for x in batch if x)
      if not batch or not page.get('next'):
        return
      offset += len(batch)

  def search(self, q: str, kind: str, max_items: int) -> Iterator[dict]:
    """Search results of one type, lazily; a refused search is reported."""
    try:
      yield from self.pages('GET /search', 'search', q=q, type=kind, limits=SEARCH_LIMITS,
                            max_items=max_items, items_key=kind + 's')
    except Refused as e:
      self.report.add('search', kind, q, f'search refused ({e.refusal})')
      self.client.log(f'Spotify API: search {kind} {q!r} refused ({e.refusal}): skipped')

  # ------------------------------------------------------------ objects by id

  def _objects(self, batch: tuple[str, str, str, int], single: tuple[str, str],
               ids: Iterable[str], keep: Callable[[dict], bool] | None = None
               ) -> dict[str, dict]:
    """Objects by id: batch calls while served, else one GET per id. With
    ``keep``, the single lookups stop (returning {}) when the first object
    fails it: a field that is gone is not worth a request per item."""
    endpoint, batch_method, key, size = batch
    single_endpoint, single_method = single
    ids = list(dict.fromkeys(i for i in ids if i))
    out: dict[str, dict] = {}
    if not ids:
      return out
    if not self.client.is_refused(endpoint):
      for i in range(0, len(ids), size):
        answer = self.client.get(batch_method, ids[i:i + size])
        if isinstance(answer, Refusal):
          self.client.refuse(endpoint, answer, f'one {single_endpoint} per item instead')
          break
        out.update((o['id'], o) for o in answer.get(key) or [] if o)
      else:
        return out
    for item_id in self._bar([i for i in ids if i not in out], key):
      answer = self.client.get(single_method, item_id)
      if isinstance(answer, Refusal):
        self.report.add(single_method, item_id, '', f'lookup refused ({answer})')
        continue
      if keep is not None and not keep(answer):
        return {}
      out[answer['id']] = answer
    return out

  def artists(self, ids: Iterable[str]) -> dict[str, dict]:
    """Full artist objects (genres) by id."""
    return self._objects((BATCH_ARTISTS, 'artists', 'artists', 50),
                         ('GET /artists/{id}', 'artist'), ids)

  def popularity(self, ids: Sequence[str]) -> dict[str, Any]:
    """Track popularity by id; {} once track objects no longer carry it (2026)."""
    tracks = self._objects((BATCH_TRACKS, 'tracks', 'tracks', 50), ('GET /tracks/{id}', 'track'),
                           ids, keep=lambda t: 'popularity' in t)
    if ids and not any('popularity' in t for t in tracks.values()):
      self.client.say_once('no_popularity', 'track objects carry no popularity (removed '
                           'in 2026): column left empty')
      return {}
    return {i: t['popularity'] for i, t in tracks.items() if 'popularity' in t}

  def audio_features(self, ids: Sequence[str]) -> dict[str, dict]:
    """Audio features by id; {} when the endpoint is refused (since 2024-11)."""
    out: dict[str, dict] = {}
    if self.client.is_refused(AUDIO_FEATURES):
      return out
    for i in range(0, len(ids), 100):
      answer = self.client.get('audio_features', list(ids[i:i + 100]))
      if isinstance(answer, Refusal):
        self.client.refuse(AUDIO_FEATURES, answer, 'acousticness..valence left empty; build '
                           'with --tabular=audio to estimate what the audio allows')
        return out
      out.update((f['id'], f) for f in answer or [] if f)
    return out

  def _unless_refused(self, endpoint: str, method: str, arg: str, instead: str) -> Any:
    """The answer of one call; None once ``endpoint`` is refused (recorded with
    what is done ``instead``, and not asked again)."""
    if self.client.is_refused(endpoint):
      return None
    answer = self.client.get(method, arg)
    if isinstance(answer, Refusal):
      self.client.refuse(endpoint, answer, instead)
      return None
    return answer

  def audio_analysis(self, track_id: str) -> dict | None:
    """A track's audio analysis; None when the endpoint is refused (since 2024-11)."""
    return self._unless_refused(AUDIO_ANALYSIS, 'audio_analysis', track_id,
                                'num_sections left empty; build with --tabular=audio to '
                                'estimate it from the audio')

  def related_artists(self, artist_id: str) -> list[dict] | None:
    """Related artists; None when the endpoint is refused (since 2024-11)."""
    answer = self._unless_refused(RELATED, 'artist_related_artists', artist_id,
                                  'finding artists by a genre search (genre:"<tag>") instead')
    return None if answer is None else [a for a in answer.get('artists') or [] if a]

  # ------------------------------------------------------------ albums and tracks

  def artist_albums(self, artist_id: str, max_items: int) -> list[dict] | None:
    """The artist's albums (include_groups=album); None when the endpoint is refused."""
    if self.client.is_refused(ARTIST_ALBUMS):
      return None
    try:
      return list(self.pages(ARTIST_ALBUMS, 'artist_albums', artist_id, include_groups='album',
                             limits=ALBUM_LIMITS, max_items=max_items))
    except Refused as e:
      if e.refusal.status not in REMOVABLE:
        self.report.add('artist albums', artist_id, '', f'refused ({e.refusal})')
        return []
      self.client.refuse(ARTIST_ALBUMS, e.refusal, 'albums found through a track search by '
                         'artist name (artist:"<name>") instead')
      return None

  def albums_by_search(self, name: str, artist_id: str, max_tracks: int) -> list[dict]:
    """The artist's albums (album_type 'album', first seen first) among the
    tracks a search by artist name finds."""
    albums: dict[str, dict] = {}
    for track in self.search(f'artist:"{name}"', 'track', max_tracks):
      album = track.get('album') or {}
      credited = {a.get('id') for a in track.get('artists') or [] if a}
      if artist_id in credited and album.get('id') and album.get('album_type') == 'album':
        albums.setdefault(album['id'], album)
    return list(albums.values())

  def album_tracks(self, album_id: str) -> list[dict]:
    try:
      return list(self.pages('GET /albums/{id}/tracks', 'album_tracks', album_id,
                             limits=ALBUM_TRACK_LIMITS, max_items=1000))
    except Refused as e:
      self.report.add('album', album_id, '', f'tracks refused ({e.refusal})')
      return []

  # ------------------------------------------------------------ playlists

  def playlist_tracks(self, playlist_id: str, max_items: int) -> tuple[list[dict], str]:
    """(tracks, '') of a playlist, or ([], why it is skipped)."""
    try:
      items = self._playlist_items(playlist_id, max_items)
    except Refused as e:
      return [], self._playlist_skip_reason(e.refusal)
    tracks = [it.get('item') or it.get('track') for it in items]  # 'track': before 2026
    return [t for t in tracks if t and t.get('id') and t.get('type', 'track') == 'track'], ''

  def _playlist_items(self, playlist_id: str, max_items: int) -> list[dict]:
    """/items (2026 on); where it answers 404, the older /tracks path on the same
    playlist tells an API from before the rename from a playlist that is gone."""
    def legacy() -> list[dict]:  # spotipy 2.26 reads /items only; its generic GET reaches /tracks
      return list(self.pages(LEGACY_TRACKS, '_get', f'playlists/{playlist_id}/tracks',
                             additional_types='track', limits=PLAYLIST_LIMITS,
                             max_items=max_items))

    path = self.client.fact('playlist_path')
    if path == 'tracks':
      return legacy()
    try:
      items = list(self.pages(ITEMS, 'playlist_items', playlist_id, additional_types=['track'],
                              limits=PLAYLIST_LIMITS[1:], max_items=max_items))
    except Refused as e:
      if e.refusal.status != 404 or path is not None:
        raise
      try:
        items = legacy()
      except Refused:
        raise e from None
      self.client.set_fact('playlist_path', 'tracks')
      self.client.say_once('playlist_path', f'{ITEMS} is not served ({e.refusal}; the API '
                           f'before 2026): reading {LEGACY_TRACKS}')
      return items
    self.client.set_fact('playlist_path', 'items')
    return items

  def _playlist_skip_reason(self, refusal: Refusal) -> str:
    if refusal.status == 403:
      self.client.say_once('playlist_items_403', f'{ITEMS} refused ({refusal}) for playlists '
                           'the user does not own or collaborate on (development mode since '
                           '2026-02-11; an app logged in with client credentials has no '
                           'user): those playlists are skipped')
      return (f'items not served ({refusal}): development mode serves only playlists the '
              'logged-in user owns or collaborates on')
    if refusal.status == 404:
      return (f'playlist not found ({refusal}): Spotify-owned editorial playlists are hidden '
              'from apps created since 2024-11-27')
    return f'items refused ({refusal})'

  def my_playlists(self, max_items: int = 1000) -> list[dict]:
    """The logged-in user's own and followed playlists (needs --auth=user)."""
    try:
      return list(self.pages('GET /me/playlists', 'current_user_playlists', limits=(50,),
                             max_items=max_items))
    except Refused as e:
      self.report.add('playlists', 'me', '', f'your playlists refused ({e.refusal})')
      self.client.log(f'Spotify API: GET /me/playlists refused ({e.refusal})')
      return []
