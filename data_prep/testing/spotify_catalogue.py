"""What the fake Spotify serves: artists, albums, tracks, playlists.

Two catalogues: ``tiny_catalogue`` (seven artists, every case the tests pin:
related-artist chains, credits shared with another artist, an artist
outside every tag, editorial and user-owned playlists) and
``metal_catalogue`` (artists for each of the reference's 32 metal query
tags, enough for a 20-class data set). ``write_library`` writes short
synthetic audio files for a catalogue's tracks, laid out and tagged as a
music library is (``Artist/Album/NN - Title.flac``), so the collected table
can be matched with local audio as a real one would be.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import string
from collections.abc import Iterable

import soundfile as sf

from crnn_jax.core import labels, storage
from data_prep import demo

EDITORIAL = 'spotify'  # owner of Spotify's editorial playlists
OTHER_USER = 'someone'
BASE62 = string.digits + string.ascii_letters


@dataclasses.dataclass
class Artist:
  id: str
  name: str
  genres: list[str]


@dataclasses.dataclass
class Album:
  id: str
  name: str
  artist: str
  tracks: list[str] = dataclasses.field(default_factory=list)
  album_type: str = 'album'


@dataclasses.dataclass
class Track:
  id: str
  name: str
  album: str
  artists: list[str]
  explicit: bool
  duration_ms: int
  popularity: int


@dataclasses.dataclass
class Playlist:
  id: str
  name: str
  owner: str
  tracks: list[str]
  collaborative: bool = False


@dataclasses.dataclass
class Catalogue:
  artists: dict[str, Artist] = dataclasses.field(default_factory=dict)
  albums: dict[str, Album] = dataclasses.field(default_factory=dict)
  tracks: dict[str, Track] = dataclasses.field(default_factory=dict)
  related: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  playlists: dict[str, Playlist] = dataclasses.field(default_factory=dict)

  def add_album(self, album_id: str, name: str, artist: str, credits: list[list[str]],
                album_type: str = 'album') -> Album:
    """An album whose j-th track credits ``credits[j]``; track ids derive from the album's."""
    album = self.albums[album_id] = Album(album_id, name, artist, album_type=album_type)
    for j, credited in enumerate(credits):
      tid = spotify_id(f'track:{album_id}:{j}') if len(album_id) == 22 else f'{album_id}t{j}'
      seed = sum(map(ord, tid))
      self.tracks[tid] = Track(tid, f'{name} Song {j + 1}', album_id, credited, explicit=j % 2 == 1,
                               duration_ms=180_000 + 1000 * (seed % 97),
                               popularity=20 + seed % 70)
      album.tracks.append(tid)
    return album

  def artist_tracks(self, artist_id: str) -> list[str]:
    return [t.id for t in self.tracks.values() if t.artists[0] == artist_id]


def spotify_id(text: str) -> str:
  """A 22-character base62 id, deterministic in ``text`` (Spotify's id shape)."""
  n = int.from_bytes(hashlib.sha256(text.encode()).digest(), 'big')
  out = []
  for _ in range(22):
    n, r = divmod(n, 62)
    out.append(BASE62[r])
  return ''.join(out)


def tiny_catalogue() -> Catalogue:
  """Seven artists. A1 has 12 albums (a sample of 5 of the first 10 shows);
  A1 -> A6, A2 and A2 -> A7, A3 are related; A6 is pop (never labelled);
  the second track of each album also credits A6 (on album 1: only A6)."""
  cat = Catalogue()
  genres = {'A1': ['black metal', 'atmospheric black metal'], 'A2': ['black metal'],
            'A3': ['blackgaze', 'black metal'], 'A4': ['death metal'],
            'A5': ['death metal', 'melodic death metal'], 'A6': ['pop'],
            'A7': ['black metal', 'depressive black metal']}
  for a, g in genres.items():
    cat.artists[a] = Artist(a, f'Artist {a}', g)
    for k in range(12 if a == 'A1' else 2):
      second = ['A6'] if k == 1 else [a, 'A6']
      cat.add_album(f'{a}alb{k:02d}', f'Album {a} {k:02d}', a, [[a], second])
  cat.related = {'A1': ['A6', 'A2'], 'A2': ['A7', 'A3'], 'A4': ['A5'], 'A3': [], 'A5': [],
                 'A6': [], 'A7': []}
  for pid, name, owner, tracks in [
      ('PLbm', 'Black Metal Essentials', OTHER_USER, ['A1alb00t0', 'A6alb00t0']),
      ('PLbg', 'Blackgaze', OTHER_USER, ['A3alb00t0']),
      ('PLdm', 'Death Metal', OTHER_USER, ['A4alb00t0', 'A1alb00t1']),
      ('PLrock', 'Rock Classics', OTHER_USER, ['A4alb00t0', 'A6alb00t0', 'A6alb01t0']),
      ('PLed', 'Metal Editorial Mix', EDITORIAL, ['A2alb00t0']),
      ('PLmine', 'My death metal', 'fake_user', ['A5alb00t0', 'A5alb01t0']),
  ]:
    cat.playlists[pid] = Playlist(pid, name, owner, tracks)
  return cat


def metal_catalogue(artists_per_tag: int = 2, albums_per_artist: int = 2,
                    tracks_per_album: int = 2) -> Catalogue:
  """Artists for each of the reference's 32 query tags (so 20 classes after
  its label map), each tagged with its tag and a broader one; related
  artists chain within a tag; per tag, a playlist by another user and an
  editorial one."""
  cat = Catalogue()
  for tag in labels.METAL_QUERY_GENRES:
    ids = [spotify_id(f'artist:{tag}:{k}') for k in range(artists_per_tag)]
    for k, aid in enumerate(ids):
      name = f'{tag.title()} Band {k + 1}'
      cat.artists[aid] = Artist(aid, name, [tag, 'metal' if 'metal' not in tag else 'rock'])
      cat.related[aid] = ids[k + 1:k + 2]
      for b in range(albums_per_artist):
        cat.add_album(spotify_id(f'album:{aid}:{b}'), f'{name} Album {b + 1}', aid,
                      [[aid]] * tracks_per_album)
    first_tracks = [cat.artist_tracks(a)[0] for a in ids]
    cat.playlists[spotify_id(f'pl:{tag}')] = Playlist(
        spotify_id(f'pl:{tag}'), f'{tag} essentials', OTHER_USER, first_tracks)
    cat.playlists[spotify_id(f'ed:{tag}')] = Playlist(
        spotify_id(f'ed:{tag}'), f'This is {tag}', EDITORIAL, first_tracks[:1])
  return cat


def write_library(cat: Catalogue, folder: str, track_ids: Iterable[str] | None = None,
                  seconds: float = 3.0, sample_rate: int = 22_050) -> list[str]:
  """Synthetic FLAC files for the tracks, tagged with artist, album and title,
  at ``folder/<artist>/<album>/NN - <title>.flac``; existing files are kept."""
  written = []
  for tid in track_ids if track_ids is not None else list(cat.tracks):
    track = cat.tracks[tid]
    album = cat.albums[track.album]
    artist = cat.artists[track.artists[0]]
    number = album.tracks.index(tid) + 1
    path = os.path.join(folder, artist.name, album.name, f'{number:02d} - {track.name}.flac')
    written.append(path)
    if os.path.exists(path):
      continue
    styles = demo.STYLES
    style = styles[sum(map(ord, (artist.genres or ['?'])[0])) % len(styles)]
    y = demo.synthesize(style, seed=0, index=sum(map(ord, tid)) % 10_000, seconds=seconds,
                        sample_rate=sample_rate)
    with (storage.atomic_write(path, 'wb') as f,
          sf.SoundFile(f, 'w', sample_rate, 1, format='FLAC') as out):
      out.artist, out.album, out.title = artist.name, album.name, track.name
      out.write(y)
  return written
