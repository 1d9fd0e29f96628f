"""The JSON objects the fake Spotify serves, as each era shapes them.

2026 development mode removed fields from every object that carries them:
track ``popularity``, ``available_markets``, ``linked_from``; album
``available_markets``, ``label``, ``popularity``; artist ``popularity`` and
``followers`` (``genres`` stays, sparse and deprecated); ``external_ids``
came back in March 2026. Playlists renamed ``tracks`` to ``items`` (the old
key kept as a deprecated alias). Previews are null after 2024-11-27.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import soundfile as sf

from data_prep.testing.spotify_catalogue import Catalogue


@dataclasses.dataclass(frozen=True)
class Shapes:
  """Objects of one catalogue in one era; ``url`` is the fake's base URL."""
  cat: Catalogue
  era: str
  url: str

  def artist(self, artist_id: str, full: bool = True) -> dict:
    a = self.cat.artists[artist_id]
    obj = {'id': a.id, 'name': a.name, 'type': 'artist', 'uri': f'spotify:artist:{a.id}',
           'href': f'{self.url}/v1/artists/{a.id}'}
    if full:
      obj.update(genres=list(a.genres), images=[])
      if self.era != '2026':
        obj.update(popularity=40 + len(a.genres), followers={'href': None, 'total': 1000})
    return obj

  def album(self, album_id: str, full: bool = True) -> dict:
    al = self.cat.albums[album_id]
    obj = {'id': al.id, 'name': al.name, 'type': 'album', 'album_type': al.album_type,
           'total_tracks': len(al.tracks), 'release_date': '2019-05-01',
           'uri': f'spotify:album:{al.id}', 'artists': [self.artist(al.artist, full=False)]}
    if self.era != '2026':
      obj['available_markets'] = ['SE', 'US']
      if full:
        obj.update(popularity=30, label='Fake Records')
    return obj

  def track(self, track_id: str, full: bool = True) -> dict:
    t = self.cat.tracks[track_id]
    album = self.cat.albums[t.album]
    obj = {'id': t.id, 'name': t.name, 'type': 'track', 'uri': f'spotify:track:{t.id}',
           'explicit': t.explicit, 'duration_ms': t.duration_ms, 'is_local': False,
           'track_number': album.tracks.index(t.id) + 1, 'disc_number': 1,
           'artists': [self.artist(a, full=False) for a in t.artists],
           'preview_url': f'{self.url}/previews/{t.id}.mp3' if self.era == '2020' else None}
    if full:
      obj.update(album=self.album(t.album, full=False),
                 external_ids={'isrc': f'XX{t.id[:10].upper()}'})  # restored in March 2026
      if self.era != '2026':
        obj.update(popularity=t.popularity, available_markets=['SE', 'US'])
    elif self.era != '2026':
      obj['available_markets'] = ['SE', 'US']
    return obj

  def playlist(self, playlist_id: str) -> dict:
    p = self.cat.playlists[playlist_id]
    obj = {'id': p.id, 'name': p.name, 'type': 'playlist', 'public': True,
           'collaborative': p.collaborative, 'description': '', 'snapshot_id': 'snap',
           'owner': {'id': p.owner, 'display_name': p.owner, 'type': 'user'},
           'uri': f'spotify:playlist:{p.id}'}
    ref = {'href': f'{self.url}/v1/playlists/{p.id}/tracks', 'total': len(p.tracks)}
    if self.era == '2026':
      obj['items'] = dict(ref, href=f'{self.url}/v1/playlists/{p.id}/items')
    obj['tracks'] = ref  # 2026: a deprecated alias of 'items'
    return obj


def features(track_id: str) -> dict:
  seed = sum(map(ord, track_id))
  return {'id': track_id, 'type': 'audio_features', 'danceability': 0.3, 'energy': 0.9,
          'key': seed % 12, 'loudness': -5.5, 'mode': seed % 2, 'speechiness': 0.1,
          'acousticness': 0.01, 'instrumentalness': 0.5, 'liveness': 0.2, 'valence': 0.2,
          'tempo': 100.0 + seed % 80, 'time_signature': 4}


_PREVIEWS: dict[str, bytes] = {}


def preview(path: str) -> bytes:
  """A short MP3 (a tone per track id): what a 30-second preview URL served."""
  if path not in _PREVIEWS:
    t = np.arange(int(1.5 * 22_050)) / 22_050
    y = 0.3 * np.sin(2 * np.pi * (200 + sum(map(ord, path)) % 400) * t)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), 22_050, format='MP3')
    _PREVIEWS[path] = buf.getvalue()
  return _PREVIEWS[path]
