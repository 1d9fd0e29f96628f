"""Whether a checkpoint is intact, and what to do with one that is not.

Orbax finds some damage itself (tensorstore's CRC-32C on index nodes, sizes
of byte ranges), but a flipped bit inside an array's data restores silently
as a wrong weight. So every checkpoint this project saves gets a manifest,
``crnn_jax_manifest.json`` in its step folder: the size and SHA-256 of each
file, written once orbax has finished the checkpoint. Before a checkpoint is
read its files are checked against it; a checkpoint whose files all match is
never called damaged, whatever else fails. A checkpoint without a manifest
(killed between orbax's commit and the manifest, or saved before manifests
existed) is judged by whether orbax can read it.

A damaged checkpoint is moved, never deleted, to ``<checkpoints>_damaged/``
with a ``DAMAGED.txt`` that says which file and what failed.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re

from crnn_jax.core import storage

MANIFEST = 'crnn_jax_manifest.json'
REASON_FILE = 'DAMAGED.txt'
_QUOTED_PATH = re.compile(r'"(/[^"]+)"')


@dataclasses.dataclass(frozen=True)
class Damage:
  """What is wrong with one checkpoint."""
  step: int
  file: str  # relative to the step folder ('' when not known)
  reason: str

  def describe(self) -> str:
    return f'step {self.step}: {self.file or "checkpoint"}: {self.reason}'


def _files_under(step_dir: str) -> list[str]:
  out = []
  for dirpath, _, names in os.walk(step_dir):
    out += [os.path.relpath(os.path.join(dirpath, n), step_dir) for n in names]
  return sorted(f for f in out if f != MANIFEST)


def write_manifest(step_dir: str) -> None:
  """Records the size and SHA-256 of every file of a finished checkpoint."""
  entries = {}
  for rel in _files_under(step_dir):
    full = os.path.join(step_dir, rel)
    entries[rel] = {'bytes': os.path.getsize(full), 'sha256': storage.sha256(full)}
  storage.write_json(os.path.join(step_dir, MANIFEST), {'version': 1, 'files': entries})


def verify(step_dir: str, step: int) -> tuple[bool, Damage | None]:
  """(whether a manifest vouched for the files, the first damage found or None)."""
  path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(path):
    return False, None
  try:
    entries = storage.read_json(path)['files']
  except (OSError, ValueError, KeyError, TypeError) as e:
    return False, Damage(step, MANIFEST, f'manifest unreadable ({type(e).__name__})')
  for rel, want in sorted(entries.items()):
    damage = _check_file(os.path.join(step_dir, rel), want)
    if damage:
      return False, Damage(step, rel, damage)
  return True, None


def _check_file(path: str, want: dict) -> str | None:
  try:
    size = os.path.getsize(path)
  except OSError as e:
    return f'missing ({e.strerror or e})'
  if size != want['bytes']:
    kind = 'truncated' if size < want['bytes'] else 'grown'
    return f'{kind}: {size:,} bytes, {want["bytes"]:,} written'
  try:
    digest = storage.sha256(path)
  except OSError as e:
    return f'unreadable ({e.strerror or e})'
  if digest != want['sha256']:
    return 'contents changed since it was written (SHA-256 differs)'
  return None


def cause_of_type(error: BaseException, types: tuple[type, ...]) -> BaseException | None:
  """The innermost exception of those types in ``error``'s cause chain."""
  found, seen = None, set()
  e: BaseException | None = error
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, types):
      found = e
    e = e.__cause__ or e.__context__
  return found


def damage_from_error(step: int, step_dir: str, error: BaseException) -> Damage:
  """A read error as Damage: the file it names (tensorstore names the file or
  the database it failed on) and its last, most specific clause."""
  text = str(error).split(' [tensorstore_spec')[0]
  inside = [p for p in _QUOTED_PATH.findall(text) if p.startswith(step_dir + os.sep)]
  filename = getattr(error, 'filename', None)
  if isinstance(filename, str) and filename.startswith(step_dir + os.sep):
    inside.append(filename)
  rel = os.path.relpath(inside[-1], step_dir) if inside else ''
  clauses = [c for c in _QUOTED_PATH.sub('FILE', text).split(': ') if c.strip()]
  reason = ': '.join(clauses[-2:]) if clauses else type(error).__name__
  return Damage(step, rel, ' '.join(f'{type(error).__name__}: {reason}'.split())[:300])


def move_aside(step_dir: str, damage: Damage) -> str:
  """Moves a damaged checkpoint to ``<checkpoints>_damaged/<step>-<UTC time>``
  with DAMAGED.txt; returns the new path. OSError if it cannot be moved."""
  parent = os.path.dirname(step_dir.rstrip(os.sep))
  stamp = datetime.datetime.now(datetime.UTC).strftime('%Y%m%dT%H%M%SZ')
  target = os.path.join(parent + '_damaged', f'{damage.step}-{stamp}')
  suffix = 0
  while os.path.exists(target + (f'.{suffix}' if suffix else '')):
    suffix += 1
  target += f'.{suffix}' if suffix else ''
  os.makedirs(os.path.dirname(target), exist_ok=True)
  os.rename(step_dir, target)
  storage.write_text(os.path.join(target, REASON_FILE), json.dumps(
      {'step': damage.step, 'file': damage.file, 'reason': damage.reason,
       'moved_from': step_dir, 'moved_at': stamp}, indent=2) + '\n')
  return target
