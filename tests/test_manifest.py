"""Manifest CSV sources (generic, the reference's metal table, FMA) -> TFDS sets."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import soundfile as sf

from crnn_jax.core import audio, audio_features, labels, tabular
from data_prep import __main__ as data_prep_main
from data_prep import build, manifest
from data_prep.split import artist_key

SR = 22_050
CLIP = audio.ClipSettings(seconds=2.0, position='start', min_seconds=1.0)


def _wav(path: str, freq: float, seconds: float = 1.5, seed: int = 0) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  t = np.arange(int(seconds * SR)) / SR
  rng = np.random.default_rng(seed)
  sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t)))
           .astype(np.float32), SR)
  return path


def _write_csv(path: str, header: list[str], rows: list[list]) -> str:
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return path


def _records(data_dir: str, name: str) -> dict[str, dict]:
  import tensorflow_datasets as tfds
  out = {}
  for split, src in tfds.data_source(name, data_dir=data_dir).items():
    for i in range(len(src)):
      r = dict(src[i])
      for k in ('track_id', 'artist_id'):
        r[k] = r[k].decode() if isinstance(r[k], bytes) else r[k]
      out[r['track_id']] = dict(r, split=split)
  return out


def _report(data_dir: str, name: str) -> dict[str, str]:
  with open(os.path.join(data_dir, f'{name}_report.csv'), newline='', encoding='utf-8') as f:
    return {r['origin'].rsplit(':', 1)[-1] + '|' + r['track_id']: r['reason']
            for r in csv.DictReader(f)}


def test_parse_label_set():
  assert manifest.parse_label_set("['death metal', 'thrash metal']") == ['death metal',
                                                                         'thrash metal']
  assert manifest.parse_label_set('a; b') == ['a', 'b']
  assert manifest.parse_label_set('a|b') == ['a', 'b']
  assert manifest.parse_label_set("[__import__('os')]") == ["__import__('os')"]  # never run
  assert manifest.parse_label_set('') == []


def test_generic_manifest_with_tabular_and_bad_rows(tmp_path):
  root = str(tmp_path)
  header = ['track_id', 'path', 'label', 'artist', 'explicit', 'key', 'mode', 'tempo', 'loudness']
  rows, good = [], {}
  for i in range(12):
    label = ('x', 'y', 'z')[i % 3]
    rel = f'audio/{i}.wav'
    _wav(os.path.join(root, rel), 200 + 40 * i, seed=i)
    rows.append([f't{i}', rel, label, f'artist{i // 2}', ['False', 'True'][i % 2], i % 12, i % 2,
                 100 + 5 * i, -10 - i])
    good[f't{i}'] = (label, [1 + i % 2, 1 + i % 12, 1 + i % 2, -10 - i, 100 + 5 * i])
  _wav(os.path.join(root, 'audio/b.wav'), 300)
  rows += [
      ['b14', '', 'x', 'a', 'False', 1, 1, 120, -5],  # line 14: no path
      ['b15', 'audio/b.wav', '', 'a', 'False', 1, 1, 120, -5],  # 15: no label
      ['b16', 'audio/b.wav', 'x', 'a', 'False', 1, 1, 'fast', -5],  # 16: non-numeric
      ['b17', 'audio/b.wav', 'x', 'a', 'False', 1, 1, '', -5],  # 17: missing tabular value
      ['b18', 'audio/b.wav', 'w', 'a', 'False', 1, 1, 120, -5],  # 18: unknown label
      ['t0', 'audio/b.wav', 'x', 'a', 'False', 1, 1, 120, -5],  # 19: duplicate id
      ['b20', 'audio/b.wav', 'x'],  # 20: malformed
      ['b21', 'audio/missing.wav', 'x', 'a', 'False', 1, 1, 120, -5],  # 21: no such file
      ['b22', 'audio/b.wav', 'x', 'a', 'False', 14, 1, 120, -5],  # 22: key out of range
  ]
  csv_path = _write_csv(os.path.join(root, 'm.csv'), header, rows)
  out = str(tmp_path / 'out')
  summary = build.build_dataset(csv_path, out, 'gen', clip=CLIP, workers=1, progress=False,
                                  class_names=['x', 'y', 'z'])
  recs = _records(out, 'gen')
  assert set(recs) == set(good)
  for tid, (label, values) in good.items():
    assert summary['classes'][recs[tid]['label']] == label
    np.testing.assert_allclose(recs[tid]['tabular'], values)  # raw, 1-based codes
  report = _report(out, 'gen')
  expected = {'14|b14': 'missing field: path', '15|b15': 'missing field: label',
              '16|b16': 'non-numeric tempo', '17|b17': 'missing tabular value: tempo',
              '18|b18': 'unknown label', '19|t0': 'duplicate track id',
              '20|': 'malformed CSV row', '21|b21': 'unreadable path',
              '22|b22': 'key 14 out of range'}
  assert set(report) == set(expected)
  for k, hint in expected.items():
    assert hint in report[k], (k, report[k])
  # Metadata: standardisation statistics from the training split only.
  import tensorflow_datasets as tfds
  md = tfds.builder('gen', data_dir=out).info.metadata
  assert md['tabular_names'] == ['explicit', 'key', 'mode', 'loudness', 'tempo']  # SPEC order
  assert md['tabular_categorical'] == {'explicit': 2, 'key': 12, 'mode': 2}
  train = np.stack([r['tabular'] for r in recs.values() if r['split'] == 'train'])
  np.testing.assert_allclose(md['tabular_mean'], [0, 0, 0] + list(train[:, 3:].mean(0)), rtol=1e-5)
  np.testing.assert_allclose(md['tabular_std'], [1, 1, 1] + list(train[:, 3:].std(0, ddof=1)),
                             rtol=1e-5)
  assert len(train) < len(recs)
  # Training reads it through crnn_jax.core.tabular in both encodings.
  raw = np.stack([r['tabular'] for r in recs.values()])
  assert tabular.encode(raw, md, 'raw').shape == (12, 5)
  assert tabular.encode(raw, md, 'onehot').shape == (12, 2 + 12 + 2 + 2)
  # Artists never straddle splits.
  by_artist: dict[str, set] = {}
  for tid, r in recs.items():
    by_artist.setdefault(r['artist_id'], set()).add(r['split'])
  assert all(len(s) == 1 for s in by_artist.values())


def test_tabular_from_audio_fills_what_the_source_lacks(tmp_path):
  root = str(tmp_path)
  rows = []
  for i in range(6):
    _wav(os.path.join(root, f'{i}.wav'), 220 * (1 + i % 3), seconds=2.0, seed=i)
    rows.append([f'{i}.wav', 'ab'[i % 2], 40 + i])
  csv_path = _write_csv(os.path.join(root, 'm.csv'), ['path', 'label', 'popularity'], rows)
  out = str(tmp_path / 'out')
  build.build_dataset(csv_path, out, 'est', clip=CLIP, workers=1, progress=False,
                        tabular='audio')
  import tensorflow_datasets as tfds
  md = tfds.builder('est', data_dir=out).info.metadata
  assert md['tabular_names'] == ['key', 'mode', 'duration_ms', 'loudness', 'num_sections',
                                 'popularity', 'tempo', 'time_signature']
  recs = _records(out, 'est')
  e = audio_features.estimate(audio.load_audio(os.path.join(root, '3.wav')))
  expected = [e['key'] + 1, e['mode'] + 1, e['duration_ms'], e['loudness'], e['num_sections'],
              43, e['tempo'], e['time_signature']]
  np.testing.assert_allclose(recs['3']['tabular'], expected, rtol=1e-5)


def test_metal_track_data_preset(tmp_path):
  root = str(tmp_path)
  header = ['id', 'name', 'artist', 'artist_id', 'genre', 'artist_genres', 'preview_url']
  ids = ['3abcDEF', '3xyzUVW', '7klmnop', '7qrstuv', '0aaaaaa', '0bbbbbb', '5ccccc1',
         '5ccccc2', '9dddddd', '9eeeeee']
  genres = ['blackgaze', 'black metal', 'thrash metal', 'thrash metal', 'goregrind',
            'grindcore', 'death metal', 'technical death metal', 'djent', 'death metal']
  artists = ['a1', 'a1', 'a2', 'a3', 'a4', 'a4', 'a5', 'a6', 'a7', 'a8']
  rows = []
  for k, (tid, g, a) in enumerate(zip(ids, genres, artists)):
    _wav(os.path.join(root, tid[:2], tid + '.mp3').replace('.mp3', '.wav'), 200 + 50 * k)
    os.replace(os.path.join(root, tid[:2], tid + '.wav'), os.path.join(root, tid[:2], tid + '.mp3'))
    rows.append([tid, f'song {k}', a.upper(), a, g, str([g, 'melodic death metal', 'swedish metal']),
                 ''])
  csv_path = _write_csv(os.path.join(root, 'metal_track_data.csv'), header, rows)
  out = str(tmp_path / 'out')
  summary = build.build_dataset(
      csv_path, out, 'metal_mini', clip=CLIP, workers=1, progress=False,
      class_names=list(labels.METAL_SUBGENRES), label_map=labels.METAL_LABEL_MAP,
      manifest_options={'preset': 'metal_track_data'})
  recs = _records(out, 'metal_mini')
  assert set(recs) == set(ids) - {'9dddddd'}  # djent is dropped
  assert 'dropped label' in _report(out, 'metal_mini')['10|9dddddd']
  names = summary['classes']
  assert names[recs['3abcDEF']['label']] == 'black metal'  # blackgaze merged
  assert names[recs['5ccccc2']['label']] == 'death metal'
  assert names[recs['0aaaaaa']['label']] == 'grindcore'
  mel = names.index('melodic death metal')
  assert recs['3abcDEF']['label_set'][mel] == 1 and recs['3abcDEF']['label_set'].sum() == 2
  assert recs['3abcDEF']['artist_id'] == 'a1'
  assert recs['3abcDEF']['split'] == recs['3xyzUVW']['split']  # same artist, same split


def _fma_fixture(root: str) -> tuple[str, str]:
  """FMA's file shapes: pandas multi-index CSVs (2 and 3 header rows + an index-name row)."""
  tracks = os.path.join(root, 'fma_metadata', 'tracks.csv')
  os.makedirs(os.path.dirname(tracks))
  cols = [('artist', 'id'), ('set', 'split'), ('set', 'subset'), ('track', 'genre_top'),
          ('track', 'genres_all'), ('track', 'title')]
  data = [(2, 10, 'training', 'small', 'Hip-Hop', '[21]', 'Food'),
          (3, 10, 'training', 'small', 'Hip-Hop', '[21, 811]', 'Electric Ave'),
          (5, 11, 'training', 'small', 'Rock', '[12, 15]', 'This World'),
          (10, 12, 'test', 'small', 'Rock', '[12]', 'Freeway'),
          (20, 13, 'training', 'medium', 'Rock', '[12]', 'Spiritual'),
          (26, 14, 'training', 'small', '', '[12]', 'No top genre'),
          (30, 15, 'validation', 'small', 'Hip-Hop', '[21]', 'Multi\nline title'),
          (46, 16, 'training', 'small', 'Rock', '[12]', 'Six')]
  with open(tracks, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow([''] + [c[0] for c in cols])
    w.writerow([''] + [c[1] for c in cols])
    w.writerow(['track_id'] + [''] * len(cols))
    w.writerows([list(r) for r in data])
  _write_csv(os.path.join(root, 'fma_metadata', 'genres.csv'),
             ['genre_id', '#tracks', 'parent', 'title', 'top_level'],
             [[12, 1, 0, 'Rock', 12], [15, 1, 0, 'Electronic', 15], [21, 1, 0, 'Hip-Hop', 21],
              [811, 1, 21, 'Hip-Hop Beats', 21]])
  echonest = os.path.join(root, 'fma_metadata', 'echonest.csv')
  with open(echonest, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    feats = list(manifest.ECHONEST_FEATURES)
    w.writerow([''] + ['echonest'] * (len(feats) + 1))
    w.writerow([''] + ['audio_features'] * len(feats) + ['metadata'])
    w.writerow([''] + feats + ['artist_name'])
    w.writerow(['track_id'] + [''] * (len(feats) + 1))
    for tid in (2, 3, 5, 10, 20, 30, 46):
      w.writerow([tid] + [round(0.1 * (i + 1) + tid / 100, 3) for i in range(len(feats))] + ['x'])
  for k, (tid, *_) in enumerate(data):
    name = f'{tid:06d}'
    _wav(os.path.join(root, 'fma_small', name[:3], name + '.wav'), 200 + 60 * k)
    src = os.path.join(root, 'fma_small', name[:3], name + '.wav')
    os.replace(src, src[:-4] + '.mp3')
  return tracks, echonest


def test_fma_preset_with_echonest(tmp_path):
  tracks, echonest = _fma_fixture(str(tmp_path))
  out = str(tmp_path / 'out')
  summary = build.build_dataset(
      tracks, out, 'fma_mini', clip=CLIP, workers=1, progress=False, split=(0.5, 0.25, 0.25),
      manifest_options={'preset': 'fma', 'audio_root': str(tmp_path / 'fma_small'),
                        'echonest': echonest, 'subset': 'small'})
  recs = _records(out, 'fma_mini')
  assert set(recs) == {'000002', '000003', '000005', '000010', '000030', '000046'}
  assert summary['classes'] == ['Hip-Hop', 'Rock']
  assert recs['000005']['label_set'].tolist() == [0, 1]  # Electronic is no class here
  assert recs['000003']['artist_id'] == '10'
  assert recs['000002']['split'] == recs['000003']['split']  # same artist
  np.testing.assert_allclose(recs['000005']['tabular'],
                             [round(0.1 * (i + 1) + 0.05, 3) for i in range(8)], rtol=1e-6)
  assert 'genre_top' in _report(out, 'fma_mini')['9|000026']


def test_label_set_only_manifest_and_undecodable_bytes(tmp_path):
  root = str(tmp_path)
  for i in range(6):
    _wav(os.path.join(root, f'{i}.wav'), 220 + 60 * i, seed=i)
  with open(os.path.join(root, 'm.csv'), 'wb') as f:
    f.write(b'path,labels\n')
    for i in range(6):
      f.write(f'{i}.wav,"{["rock;blues", "blues", "jazz;rock"][i % 3]}"\n'.encode())
    f.write(b'caf\xe9.wav,rock\n')  # latin-1 byte in a UTF-8 file: that row names no file
  out = str(tmp_path / 'out')
  summary = build.build_dataset(os.path.join(root, 'm.csv'), out, 'sets', clip=CLIP,
                                  workers=1, progress=False)
  recs = _records(out, 'sets')
  names = summary['classes']
  assert names == ['blues', 'jazz', 'rock'] and set(recs) == {str(i) for i in range(6)}
  assert names[recs['0']['label']] == 'rock' and recs['0']['label_set'].tolist() == [1, 0, 1]
  assert names[recs['2']['label']] == 'jazz'
  report = _report(out, 'sets')
  assert len(report) == 1 and 'unreadable path' in next(iter(report.values()))


def test_fma_malformed_metadata_is_a_one_line_value_error(tmp_path):
  tracks, echonest = _fma_fixture(str(tmp_path))
  root = str(tmp_path / 'fma_small')
  with open(echonest, 'w', encoding='utf-8') as f:
    f.write(',echonest\n')  # one header row of three
  with pytest.raises(ValueError, match='expected 3 header rows, found 1'):
    manifest.read_manifest(tracks, 'fma', root, echonest=echonest)
  _write_csv(os.path.join(os.path.dirname(tracks), 'genres.csv'), ['id', 'name'], [[12, 'Rock']])
  with pytest.raises(ValueError, match='needs columns genre_id'):
    manifest.read_manifest(tracks, 'fma', root)
  os.remove(os.path.join(os.path.dirname(tracks), 'genres.csv'))
  open(tracks, 'w', encoding='utf-8').close()  # empty
  with pytest.raises(ValueError, match='expected 2 header rows, found 0'):
    manifest.read_manifest(tracks, 'fma', root)


def test_artist_names_grouped_without_case_spaces_or_featured_artists(tmp_path):
  root = str(tmp_path)
  variants = ['Metallica', 'metallica', ' METALLICA ', 'Metallica;Lou Reed']
  rows = [[f'm{i}.wav', 'x', a] for i, a in enumerate(variants)]
  rows += [[f'o{i}.wav', 'xy'[i % 2], f'other{i}'] for i in range(8)]
  for i, (rel, _, _) in enumerate(rows):
    _wav(os.path.join(root, rel), 200 + 30 * i, seconds=1.1, seed=i)
  csv_path = _write_csv(os.path.join(root, 'm.csv'), ['path', 'label', 'artist'], rows)
  source = manifest.read_manifest(csv_path)
  assert len({artist_key(t) for t in source.tracks if t.track_id[0] == 'm'}) == 1
  out = str(tmp_path / 'out')
  summary = build.build_dataset(csv_path, out, 'norm', clip=CLIP, workers=1, progress=False)
  recs = _records(out, 'norm')
  assert len({recs[f'm{i}']['split'] for i in range(4)}) == 1  # one artist, one split
  assert recs['m3']['artist_id'] == 'Metallica;Lou Reed'  # stored as given
  assert summary['grouped_by'] == 'artist'
  assert 'warning' not in build.format_summary(summary)
  # The same rows without the artist column: per track, and said so.
  no_artist = _write_csv(os.path.join(root, 'n.csv'), ['path', 'label'], [r[:2] for r in rows])
  summary = build.build_dataset(no_artist, out, 'noartist', clip=CLIP, workers=1,
                                  progress=False)
  import tensorflow_datasets as tfds
  md = tfds.builder('noartist', data_dir=out).info.metadata
  assert md['split']['grouped_by'] == summary['grouped_by'] == 'track (no artist information)'
  assert 'warning: split grouped by track' in build.format_summary(summary)


def test_fma_official_split_with_split_by_source(tmp_path):
  tracks, _ = _fma_fixture(str(tmp_path))
  out = str(tmp_path / 'out')
  summary = build.build_dataset(
      tracks, out, 'fma_split', clip=CLIP, workers=1, progress=False, source_split=True,
      manifest_options={'preset': 'fma', 'audio_root': str(tmp_path / 'fma_small')})
  recs = _records(out, 'fma_split')
  assert {t: r['split'] for t, r in recs.items()} == {
      '000002': 'train', '000003': 'train', '000005': 'train', '000010': 'test',
      '000020': 'train', '000030': 'validation', '000046': 'train'}
  assert summary['grouped_by'] == "the source's official split"
  import tensorflow_datasets as tfds
  assert tfds.builder('fma_split', data_dir=out).info.metadata['split']['source'] is True


def _mtg_fixture(root: str) -> str:
  """MTG-Jamendo's split folder: three TSVs in the real format (tab-separated,
  a variable number of category---tag columns, CRLF line ends)."""
  folder = os.path.join(root, 'data', 'splits', 'split-0')
  os.makedirs(folder)
  header = ['TRACK_ID', 'ARTIST_ID', 'ALBUM_ID', 'PATH', 'DURATION', 'TAGS']
  parts = {
      'train': [
          ['track_0000241', 'artist_000005', 'album_000033', '41/241.mp3', '340.1',
           'genre---rock'],
          ['track_0000808', 'artist_000114', 'album_000131', '08/808.mp3', '265.6', 'genre---pop',
           'genre---rock'],
          ['track_0000851', 'artist_000099', 'album_000139', '51/851.mp3', '131.9',
           'genre---disco', 'genre---funk', 'genre---pop', 'genre---rnb'],
          ['track_0000900', 'artist_000005', 'album_000034', '00/900.mp3', '200.0',
           'genre---rock', 'instrument---guitar'],
          ['track_0000901', 'artist_000007', 'album_000035', '01/901.mp3'],  # too few fields
          ['track_0000902', 'artist_000007', 'album_000035', '02/902.mp3', '99.0',
           'instrument---voice'],
          ['track_0000903', 'artist_000007', 'album_000035', '03/903.mp3', '99.0', 'rock']],
      'validation': [['track_0001009', 'artist_000300', 'album_000400', '09/1009.mp3', '180.0',
                      'genre---pop']],
      'test': [['track_0001010', 'artist_000301', 'album_000401', '10/1010.mp3', '180.0',
                'genre---rock', 'genre---pop']],
  }
  for split, lines in parts.items():
    with open(os.path.join(folder, f'autotagging_genre-{split}.tsv'), 'wb') as f:
      f.write(''.join('\t'.join(cells) + '\r\n' for cells in [header, *lines]).encode())
  audio_root = os.path.join(root, 'audio')
  for k, name in enumerate(['41/241.mp3', '08/808.mp3', '51/851.mp3', '00/900.mp3',
                            '02/902.mp3', '03/903.mp3', '09/1009.low.mp3', '10/1010.mp3']):
    path = _wav(os.path.join(audio_root, name[:-4] + '.wav'), 180 + 50 * k, seed=k)
    os.replace(path, os.path.join(audio_root, name))
  return folder


def test_mtg_jamendo_split_folder_with_official_splits(tmp_path):
  folder = _mtg_fixture(str(tmp_path))
  source = manifest.read_manifest(folder, 'mtg_jamendo', str(tmp_path / 'audio'))
  by_id = {t.track_id: t for t in source.tracks}
  assert set(by_id) == {'track_0000241', 'track_0000808', 'track_0000851', 'track_0000900',
                        'track_0001009', 'track_0001010'}
  assert by_id['track_0000851'].labels == ('disco', 'funk', 'pop', 'rnb')
  assert by_id['track_0000851'].label == 'disco' and by_id['track_0000851'].split == 'train'
  assert by_id['track_0001009'].path.endswith('09/1009.low.mp3')  # the low-quality download
  assert by_id['track_0000900'].artist_id == by_id['track_0000241'].artist_id == 'artist_000005'
  reasons = {p.track_id: p.reason for p in source.problems}
  assert reasons['track_0000901'].startswith('malformed TSV row: 4 fields')
  assert reasons['track_0000902'] == 'missing field: no genre--- tag'
  assert "tag 'rock' is not category---tag" in reasons['track_0000903']
  out = str(tmp_path / 'out')
  assert data_prep_main.main([  # the command a user types
      'build', f'--input={folder}', '--preset=mtg_jamendo', f'--audio_root={tmp_path}/audio',
      '--split_by=source', f'--data_dir={out}', '--name=mtg', '--clip_seconds=2',
      '--min_seconds=1', '--workers=1', '--no_progress']) == 0
  recs = _records(out, 'mtg')
  assert [r['split'] for _, r in sorted(recs.items())] == ['train'] * 4 + ['validation', 'test']
  import tensorflow_datasets as tfds
  names = tfds.builder('mtg', data_dir=out).info.metadata['class_names']
  assert names == ['disco', 'pop', 'rock']  # the first tags met (--classes keeps more)
  assert [names[i] for i in np.flatnonzero(recs['track_0000808']['label_set'])] == ['pop', 'rock']
  # One TSV (no official split): the build's own split works, --split_by=source refuses.
  tsv = os.path.join(folder, 'autotagging_genre-train.tsv')
  with pytest.raises(ValueError, match='no official split'):
    build.build_dataset(tsv, out, 'mtg_one', clip=CLIP, workers=1, progress=False,
                        source_split=True, manifest_options={'preset': 'mtg_jamendo',
                                                             'audio_root': str(tmp_path / 'audio')})
  with pytest.raises(ValueError, match='not an MTG-Jamendo split folder'):
    manifest.read_manifest(str(tmp_path), 'mtg_jamendo')


def test_remote_audio_paths_and_root_stay_remote(tmp_path):
  """gs:// paths (a Beam build on a cluster) are neither joined to the CSV's
  folder nor made absolute."""
  csv_path = tmp_path / 'm.csv'
  csv_path.write_text('path,label\ngs://bucket/a/1.mp3,rock\nb/2.mp3,jazz\n')
  tracks = manifest.read_manifest(str(csv_path)).tracks
  assert [t.path for t in tracks] == ['gs://bucket/a/1.mp3', str(tmp_path / 'b' / '2.mp3')]
  tracks = manifest.read_manifest(str(csv_path), audio_root='gs://bucket/audio').tracks
  assert [t.path for t in tracks] == ['gs://bucket/a/1.mp3', 'gs://bucket/audio/b/2.mp3']


def test_generic_manifest_split_column_kept_by_split_by_source(tmp_path):
  """A user's own split (e.g. cross-validation folds) survives the build as
  given; an unknown split name is a reported row, not a failed build."""
  root = str(tmp_path)
  wanted = {'a0': 'train', 'a1': 'training', 'b0': 'train', 'b1': 'validation',
            'c0': 'val', 'c1': 'test', 'd0': 'TEST'}
  rows = [[_wav(os.path.join(root, f'{t}.wav'), 220.0 * (i + 1), seed=i), t[0], t, split]
          for i, (t, split) in enumerate(wanted.items())]
  rows.append([_wav(os.path.join(root, 'x.wav'), 300.0), 'a', 'x', 'holdout'])
  csv_path = _write_csv(os.path.join(root, 'm.csv'), ['path', 'label', 'track_id', 'split'],
                        rows)
  source = manifest.read_manifest(csv_path)
  assert [p.reason for p in source.problems] == [
      "unknown split: 'holdout' (use train, validation or test, or leave it empty)"]
  out = str(tmp_path / 'out')
  summary = build.build_dataset(csv_path, out, 'own_split', clip=CLIP, workers=1,
                                progress=False, source_split=True)
  assert {t: r['split'] for t, r in _records(out, 'own_split').items()} == {
      'a0': 'train', 'a1': 'train', 'b0': 'train', 'b1': 'validation', 'c0': 'validation',
      'c1': 'test', 'd0': 'test'}
  assert summary['grouped_by'] == "the source's official split"
  assert _report(out, 'own_split') == {
      '9|x': "unknown split: 'holdout' (use train, validation or test, or leave it empty)"}
  assert 'note: the source gives' not in build.format_summary(summary)
  # The build's own split ignores the column, and says how to keep it.
  summary = build.build_dataset(csv_path, out, 'own_split_ignored', clip=CLIP, workers=1,
                                progress=False, group_by_artist=False)
  assert summary['source_split_unused'] == 7
  assert ('note: the source gives its own split for 7 track(s); --split_by=source keeps it'
          in build.format_summary(summary))
