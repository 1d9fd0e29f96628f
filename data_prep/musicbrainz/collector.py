"""Labels for a local library from MusicBrainz: files -> artists -> genres -> manifest.

Each distinct artist name (compared without case or accents) is searched
once. A candidate matches when its name equals the artist's; one match is
taken; several (namesakes: five bands are called 'Nirvana') are settled by
genre when exactly one of them has a tag of the class list, and are
otherwise reported as ambiguous. A matched artist without a tag of the class
list is reported too. The manifest has one row per file of a labelled artist
(``path,label,labels,artist,artist_id``, the MusicBrainz id as artist id, so
``data_prep build`` keeps each artist in one split); the report lists every
file and artist left out, and why.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

from crnn_jax.core import storage
from data_prep.musicbrainz.genres import Classes
from data_prep.musicbrainz.lookup import MusicBrainz, normalise
from data_prep.musicbrainz.tags import Named, Skipped

MANIFEST_COLUMNS = ('path', 'label', 'labels', 'artist', 'artist_id', 'musicbrainz_name')
REPORT_COLUMNS = ('item', 'status', 'files', 'detail')


@dataclasses.dataclass(frozen=True)
class Resolved:
  """What became of one artist name."""
  status: str  # matched | unmatched | ambiguous | no genre
  detail: str = ''
  mbid: str = ''
  mb_name: str = ''
  label: str = ''
  label_set: tuple[str, ...] = ()


def resolve(name: str, mb: MusicBrainz, classes: Classes) -> Resolved:
  """One artist name -> its MusicBrainz artist and label, or why not."""
  found = mb.candidates(name)
  same = [c for c in found if normalise(c['name']) == normalise(name)]
  if not same:
    closest = ', '.join(repr(c['name']) for c in found[:3]) or 'none'
    return Resolved('unmatched', f'no MusicBrainz artist of this name (closest: {closest})')
  for c in same:
    if not c['tags']:
      c['tags'] = mb.tags(c['id'])
  labelled = [(c, classes.label(c['tags'])) for c in same]
  with_class = [(c, lab) for c, lab in labelled if lab is not None]
  if len(same) > 1 and len(with_class) != 1:
    who = '; '.join(f"{c['id']} ({c['disambiguation'] or 'no disambiguation'})" for c in same[:5])
    return Resolved('ambiguous', f'{len(same)} MusicBrainz artists of this name: {who}')
  if not with_class:
    tags = ', '.join(f'{t} ({n})' for t, n in same[0]['tags'][:8]) or 'none'
    return Resolved('no genre', f'no tag names a class (tags: {tags})', same[0]['id'],
                    same[0]['name'])
  c, (label, label_set) = with_class[0]
  detail = (f'{len(same)} artists of this name; the only one with a class tag'
            if len(same) > 1 else '')
  return Resolved('matched', detail, c['id'], c['name'], label, tuple(label_set))


def label_files(named: Sequence[Named], skipped: Sequence[Skipped], mb: MusicBrainz,
                classes: Classes, out: str, report: str, progress: bool = True,
                log: Callable[[str], None] = print) -> dict[str, Any]:
  """Writes the manifest and the report; returns counts."""
  by_artist: dict[str, list[Named]] = collections.defaultdict(list)
  for n in named:
    by_artist[normalise(n.artist)].append(n)
  resolved: dict[str, Resolved] = {}
  for key in tqdm(sorted(by_artist), desc='artists', unit='artist', disable=not progress,
                  file=sys.stderr):
    resolved[key] = resolve(by_artist[key][0].artist, mb, classes)
  rows = [{'path': n.path, 'label': r.label, 'labels': ';'.join(r.label_set), 'artist': n.artist,
           'artist_id': r.mbid, 'musicbrainz_name': r.mb_name}
          for key, r in resolved.items() if r.status == 'matched' for n in by_artist[key]]
  _write(out, MANIFEST_COLUMNS, rows)
  problems = [{'item': s.origin, 'status': 'file skipped', 'files': 1, 'detail': s.reason}
              for s in skipped]
  problems += [{'item': by_artist[key][0].artist, 'status': r.status,
                'files': len(by_artist[key]), 'detail': r.detail}
               for key, r in resolved.items() if r.status != 'matched' or r.detail]
  _write(report, REPORT_COLUMNS, problems)
  counts = collections.Counter(r.status for r in resolved.values())
  summary = {'files': len(named) + len(skipped), 'labelled_files': len(rows),
             'artists': len(resolved), **{s: counts.get(s, 0) for s in
                                          ('matched', 'unmatched', 'ambiguous', 'no genre')},
             'files_skipped': len(skipped), 'requests': mb.requests,
             'labels': dict(sorted(collections.Counter(r['label'] for r in rows).items()))}
  log(f"wrote {out}: {summary['labelled_files']} of {summary['files']} files labelled; "
      f"{summary['artists']} artists: {summary['matched']} matched, {summary['unmatched']} "
      f"unmatched, {summary['ambiguous']} ambiguous, {summary['no genre']} without a class "
      f"tag; {summary['files_skipped']} files without a usable artist tag; report: {report}")
  return summary


def _write(path: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
  with storage.atomic_write(path, newline='', encoding='utf-8') as f:
    w = csv.DictWriter(f, fieldnames=columns)
    w.writeheader()
    w.writerows(rows)
