"""A build's input read into tracks: a library folder (one sub-folder per label)
or a manifest CSV (data_prep.manifest)."""

from __future__ import annotations

import os
from typing import Any

from crnn_jax.core.audio import AUDIO_EXTENSIONS
from data_prep import manifest
from data_prep.records import Problem, Source, Track


def printable(path: str) -> str:
  """A path as valid text: bytes of a file name that are not UTF-8 (which
  Python keeps as surrogates) written as \\xNN, so ids and reports can hold it."""
  return os.fsencode(path).decode('utf-8', 'backslashreplace')


def read_folder(root: str) -> Source:
  """A GTZAN-layout library: ``root/<label>/**/<file>.{mp3,ogg,flac,wav}``.

  Track id = path relative to root without extension (so 'rock/a.mp3' and
  'rock/a.wav' collide and the second is reported as a duplicate); artist id
  = track id (no artist information in a folder).
  """
  root = os.path.abspath(root)
  tracks, problems = [], []
  try:
    entries = sorted(os.listdir(root))
  except OSError as e:
    raise ValueError(f'cannot read input folder {root!r}: {e.strerror or e}') from None
  for entry in entries:
    full = os.path.join(root, entry)
    if not os.path.isdir(full):
      problems.append(Problem(full, '', 'not in a label folder: files must sit in '
                              '<input>/<label>/'))
      continue
    label = entry

    def on_error(e: OSError, full: str = full) -> None:
      problems.append(Problem(printable(e.filename or full), '',
                              f'unreadable path: {e.strerror or e}'))

    for dirpath, dirnames, filenames in os.walk(full, onerror=on_error):
      dirnames.sort()
      problems.extend(Problem(printable(os.path.join(dirpath, d)), '', 'unreadable path: a '
                              'folder, not an audio file (its contents are read as usual)')
                      for d in dirnames if os.path.splitext(d)[1].lower() in AUDIO_EXTENSIONS)
      for fname in sorted(filenames):
        path = os.path.join(dirpath, fname)
        origin = printable(path)
        rel = os.path.relpath(path, root)
        stem, ext = os.path.splitext(rel)
        if ext.lower() not in AUDIO_EXTENSIONS:
          problems.append(Problem(origin, '', f'not an audio file extension ({ext or "none"}): '
                                  f'expected one of {", ".join(AUDIO_EXTENSIONS)}'))
          continue
        track_id = printable(stem).replace(os.sep, '/')
        tracks.append(Track(track_id=track_id, path=path, label=label, labels=(label,),
                            artist_id=track_id, origin=origin))
  return Source(tracks, problems, (), f'folder:{root}')


def read_source(input_path: str, **manifest_kwargs: Any) -> Source:
  """A folder or a manifest CSV, by what ``input_path`` is (a preset may read a
  folder of metadata files: MTG-Jamendo's split folder)."""
  if os.path.isdir(input_path):
    if manifest_kwargs.get('preset') in manifest.FOLDER_PRESETS:
      return manifest.read_manifest(input_path, **manifest_kwargs)
    return read_folder(input_path)
  if os.path.isfile(input_path):
    return manifest.read_manifest(input_path, **manifest_kwargs)
  raise ValueError(f'input {input_path!r} is neither a folder nor a CSV file')
