"""data_prep.musicbrainz against a local fake MusicBrainz (real HTTP, real XML)."""

from __future__ import annotations

import csv
import os

import mutagen
import numpy as np
import pytest
import soundfile as sf
from mutagen.id3 import ID3, TPE1, Encoding

from crnn_jax.core import audio, labels
from data_prep import __main__ as data_prep_main
from data_prep import build
from data_prep.cache import AnswerCache
from data_prep.musicbrainz import collector, lookup, tags
from data_prep.musicbrainz.genres import Classes
from data_prep.testing.fake_musicbrainz import FakeMusicBrainz, MBArtist

INTERVAL = 0.05  # the fake's rate rule, and the client's pace in these tests
ARTISTS = [
    MBArtist('65f4f0c5-ef9e-490c-aee3-909e7ae6b2ab', 'Metallica',
             {'thrash metal': 12, 'heavy metal': 5, 'hard rock': 2}),
    MBArtist('5b11f4ce-a62d-471e-81fc-a69a8278c7da', 'Nirvana', {'grunge': 9},
             disambiguation='90s US grunge band'),
    MBArtist('9282c8b4-ca0b-4c6b-b7e3-4f7762dfc4d6', 'Nirvana', {'psychedelic pop': 2},
             disambiguation='60s band from the UK'),
    MBArtist('1d8a9e5b-4a6f-4b1e-9d8c-3f2a1b0c9d8e', 'Aura', {'power metal': 3},
             disambiguation='German band'),
    MBArtist('2e9b0f6c-5b7a-4c2f-8e9d-4a3b2c1d0e9f', 'Aura', {'electronic': 4},
             disambiguation='DJ'),
    MBArtist('3f0c1a7d-6c8b-4d3a-9f0e-5b4c3d2e1f0a', 'Alcest', {'blackgaze': 7, 'shoegaze': 6}),
    MBArtist('4a1d2b8e-7d9c-4e4b-8a1f-6c5d4e3f2a1b', 'Motörhead',
             {'heavy metal': 4, 'speed metal': 3, 'hard rock': 5}),
    MBArtist('5b2e3c9f-8e0d-4f5c-9b2a-7d6e5f4a3b2c', 'Кино', {'post-punk': 5, 'russian rock': 4}),
    MBArtist('6c3f4d0a-9f1e-4a6d-8c3b-8e7f6a5b4c3d', 'Bell Witch', {'funeral doom metal': 6}),
    MBArtist('7d4a5e1b-0a2f-4b7e-9d4c-9f8a7b6c5d4e', 'Iron Maiden',
             {'new wave of british heavy metal': 9}),
]


def _tone(path, seconds=1.5, freq=220.0, fmt=None):
  t = np.arange(int(seconds * 22050)) / 22050
  sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 22050, format=fmt)


def _flac(path, artist, freq=220.0):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  t = np.arange(int(1.5 * 22050)) / 22050
  with sf.SoundFile(path, 'w', 22050, 1, format='FLAC') as f:
    if artist:
      f.artist = artist
    f.title = os.path.basename(path)
    f.write((0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32))


def _mp3_with_latin1_artist(path, text):
  _tone(path, fmt='MP3')
  id3 = ID3()
  id3.add(TPE1(encoding=Encoding.LATIN1, text=text))
  id3.save(path)


def _library(root) -> dict[str, str]:
  """A small library; returns file -> the artist it should be labelled by."""
  files = {}
  for k, (artist, n) in enumerate([('Metallica', 3), ('Nirvana', 1), ('Aura', 2), ('Alcest', 2),
                                   ('Bell Witch', 2), ('Iron Maiden', 1), ('Unknown Band', 1)]):
    for j in range(n):
      path = os.path.join(root, artist, f'{j + 1:02d} Song.flac')
      _flac(path, artist, 200 + 40 * k + 7 * j)
      files[path] = artist
  # Tags from old taggers: UTF-8 and Windows-1251 text stored as Latin-1.
  _mp3_with_latin1_artist(os.path.join(root, 'Motorhead.mp3'),
                          'Motörhead'.encode().decode('latin-1'))
  _mp3_with_latin1_artist(os.path.join(root, 'Kino.mp3'),
                          'Кино'.encode('cp1251').decode('latin-1'))
  wav = os.path.join(root, 'Metallica', 'live.wav')  # WAV with an ID3 chunk
  _tone(wav, freq=330.0)
  f = mutagen.File(wav)
  f.add_tags()
  f.tags.add(TPE1(encoding=Encoding.UTF8, text=['Metallica']))
  f.save()
  _flac(os.path.join(root, 'untagged.flac'), '')
  with open(os.path.join(root, 'broken.mp3'), 'wb') as f:
    f.write(b'ID3' + b'\x00' * 7 + b'junk' * 100)
  with open(os.path.join(root, 'notes.txt'), 'w') as f:
    f.write('not audio')
  return files


@pytest.fixture
def fake():
  server = FakeMusicBrainz(ARTISTS, min_interval=INTERVAL).start()
  yield server
  server.stop()


def test_repair_recovers_names_old_taggers_garbled():
  assert tags.repair('MotÃ¶rhead') == 'Motörhead'
  assert tags.repair('Êèíî') == 'Кино'
  for fine in ('Björk', 'Sigur Rós', 'Mötley Crüe', 'Кино', 'AC/DC'):
    assert tags.repair(fine) == fine


def test_library_tags_and_their_problems(tmp_path):
  _library(str(tmp_path))
  named, skipped = tags.read_library(str(tmp_path), progress=False)
  by_file = {os.path.basename(n.path): n.artist for n in named}
  assert by_file['Motorhead.mp3'] == 'Motörhead' and by_file['Kino.mp3'] == 'Кино'
  assert by_file['live.wav'] == 'Metallica'
  reasons = {os.path.basename(s.origin): s.reason for s in skipped}
  assert reasons['untagged.flac'] == 'no artist tag'
  assert reasons['broken.mp3'].startswith('unreadable tags')
  assert reasons['Kino.mp3'].startswith('artist tag re-decoded')
  assert 'notes.txt' not in reasons and 'notes.txt' not in by_file


def test_tags_map_onto_the_class_lists():
  metal = Classes.parse('metal')
  assert metal.label([('thrash metal', 12), ('heavy metal', 5), ('hard rock', 2)]) == (
      'thrash metal', ['thrash metal', 'hard rock'])
  assert metal.of('Blackgaze') == 'black metal'  # the reference's merges
  assert metal.of('funeral doom metal') == 'doom metal'  # MusicBrainz's spelling, then merged
  assert metal.of('new wave of british heavy metal') is None  # nwobhm: dropped
  assert metal.label([('grunge', 9)]) is None
  genres = Classes.parse('genres')
  assert genres.label([('hip hop', 3), ('jazz', 3)]) == ('jazz', ['jazz', 'rap'])  # ties: order
  assert Classes.parse('a, b').names == ('a', 'b')
  with pytest.raises(ValueError):
    Classes.parse(' , ')


def test_library_labelled_from_the_fake_musicbrainz(tmp_path, fake):
  lib = tmp_path / 'lib'
  _library(str(lib))
  out = tmp_path / 'labels.csv'
  code = data_prep_main.main(['musicbrainz', f'--library={lib}', f'--out={out}',
                              f'--server={fake.url}', f'--rate={INTERVAL * 1.2}',
                              '--contact=tests@example.org', '--no_progress'])
  assert code == 0
  with open(out, newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  by_artist = {r['artist']: (r['label'], r['labels'], r['artist_id']) for r in rows}
  assert by_artist == {
      'Metallica': ('thrash metal', 'thrash metal;hard rock', ARTISTS[0].id),
      'Aura': ('power metal', 'power metal', ARTISTS[3].id),  # the namesake with a class tag
      'Alcest': ('black metal', 'black metal', ARTISTS[5].id),
      'Bell Witch': ('doom metal', 'doom metal', ARTISTS[8].id),
      'Motörhead': ('hard rock', 'hard rock', ARTISTS[6].id),
  }
  assert sum(r['artist'] == 'Metallica' for r in rows) == 4  # 3 FLAC + the WAV
  with open(tmp_path / 'labels_report.csv', newline='', encoding='utf-8') as f:
    report = {(r['item'].rsplit('/', 1)[-1], r['status']): r['detail'] for r in csv.DictReader(f)}
  assert report[('Nirvana', 'ambiguous')].startswith('2 MusicBrainz artists of this name')
  assert report[('Unknown Band', 'unmatched')].startswith('no MusicBrainz artist')
  assert report[('Iron Maiden', 'no genre')].startswith('no tag names a class')
  assert report[('Кино', 'no genre')]
  assert report[('untagged.flac', 'file skipped')] == 'no artist tag'
  # MusicBrainz's rules were kept: a user agent with the contact, one request per interval.
  assert fake.too_fast == 0 and len(fake.requests) == 9  # one search per artist name
  assert all('crnn_jax-data_prep' in r.user_agent and 'tests@example.org' in r.user_agent
             for r in fake.requests)
  gaps = np.diff([r.at for r in fake.requests])
  assert gaps.min() >= INTERVAL * 0.95
  # A rerun asks nothing: every answer is cached.
  assert data_prep_main.main(['musicbrainz', f'--library={lib}', f'--out={out}',
                              f'--server={fake.url}', f'--rate={INTERVAL * 1.2}',
                              '--no_progress']) == 0
  assert len(fake.requests) == 9
  # The manifest builds; the MusicBrainz id groups each artist into one split.
  summary = build.build_dataset(
      str(out), str(tmp_path / 'tfds'), 'mb', workers=1, progress=False, verbose=False,
      clip=audio.ClipSettings(seconds=1.0, min_seconds=1.0), split=(0.34, 0.33, 0.33),
      stratify=False)
  assert summary['grouped_by'] == 'artist' and sum(summary['clips_per_split'].values()) == 11


def test_manifest_column_input_and_bad_rows(tmp_path, fake):
  lib = tmp_path / 'lib'
  _library(str(lib))
  manifest = tmp_path / 'in.csv'
  with open(manifest, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['path', 'band'])
    w.writerow(['lib/Metallica/01 Song.flac', 'Metallica'])
    w.writerow(['lib/Alcest/01 Song.flac', 'Alcest;Neige'])
    w.writerow(['lib/Aura/01 Song.flac', ''])
    w.writerow(['', 'Metallica'])
  named, skipped = tags.read_manifest(str(manifest), 'band')
  assert [n.artist for n in named] == ['Metallica', 'Alcest']
  assert named[0].path == str(lib / 'Metallica' / '01 Song.flac')
  assert [s.reason for s in skipped] == ['missing field: band', 'missing field: path']
  cache = AnswerCache(str(tmp_path / 'c.sqlite'))
  summary = collector.label_files(named, skipped, lookup.MusicBrainz(cache, fake.url, INTERVAL),
                                  Classes.parse('metal'), str(tmp_path / 'o.csv'),
                                  str(tmp_path / 'r.csv'), progress=False, log=lambda s: None)
  cache.close()
  assert summary['labels'] == {'black metal': 1, 'thrash metal': 1}
  with pytest.raises(ValueError, match="no column 'artist'"):
    tags.read_manifest(str(manifest))


def test_unreachable_server_is_one_line(tmp_path, capsys):
  _flac(str(tmp_path / 'lib' / 'a.flac'), 'Metallica')
  server = FakeMusicBrainz(ARTISTS).start()
  url = server.url
  server.stop()  # nothing listens there any more
  code = data_prep_main.main(['musicbrainz', f'--library={tmp_path}/lib',
                              f'--out={tmp_path}/o.csv', f'--server={url}', '--rate=0',
                              '--no_progress'])
  err = capsys.readouterr().err.strip()
  assert code == 2 and err.startswith('error: MusicBrainz did not answer') and '\n' not in err


def test_musicbrainz_org_is_never_asked_faster_than_once_a_second():
  with pytest.raises(ValueError, match='one request per second'):
    lookup.MusicBrainz(None, 'https://musicbrainz.org', interval=0.5)
  assert lookup.MusicBrainz(None).interval == 1.0  # the default pace: MusicBrainz's rule
  assert labels.METAL_LABEL_MAP['blackgaze'] == 'black metal'
