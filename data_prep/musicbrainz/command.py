"""``python -m data_prep musicbrainz``: genre labels for a local library, no Spotify.

Artist names come from the files' tags (--library) or a manifest column
(--manifest, --artist_column); each artist is looked up on MusicBrainz (one
request a second, as MusicBrainz asks; cached, so a rerun resumes), its tags
mapped onto the class list (--classes: 'metal' for the reference's 20
subgenres with its merges, 'genres' for its 10 genres, or your own names with
--label_map). Output: a manifest for `python -m data_prep build --input=OUT`
(the MusicBrainz artist id as artist id, so no artist spans two splits),
OUT_report.csv (files without an artist tag, repaired tags, artists
unmatched, ambiguous or without a class tag) and OUT_musicbrainz.sqlite.

Watch a run against a local fake MusicBrainz:
  python -m data_prep.testing.fake_musicbrainz --port=8766 &
  python -m data_prep musicbrainz --library=MUSIC --out=labels.csv \\
      --server=http://127.0.0.1:8766
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from data_prep.cache import AnswerCache
from data_prep.musicbrainz import collector, lookup, tags
from data_prep.musicbrainz.genres import Classes


def add_command(commands: Any) -> None:
  p = commands.add_parser('musicbrainz', help='label a local library by its artists\' '
                          'MusicBrainz genres', description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument('--library', help='folder of audio files; artist names from their tags')
  src.add_argument('--manifest', help='CSV with a path column and an artist column')
  p.add_argument('--artist_column', default='artist', help='--manifest: the artist column')
  p.add_argument('--path_column', default='path', help='--manifest: the audio path column')
  p.add_argument('--out', required=True, help='manifest CSV to write')
  p.add_argument('--classes', default='metal', help="'metal', 'genres', or comma-separated "
                 'class names')
  p.add_argument('--label_map', default='', help='JSON file: tag -> class name or null (drop)')
  p.add_argument('--contact', default='', help='your e-mail or URL, sent in the User-Agent as '
                 'MusicBrainz asks')
  p.add_argument('--server', default=lookup.MUSICBRAINZ, help='MusicBrainz server (a mirror, or '
                 'the fake of `python -m data_prep.testing.fake_musicbrainz`)')
  p.add_argument('--rate', type=float, default=1.0, help='seconds between requests (>= 1 for '
                 'musicbrainz.org)')
  p.add_argument('--no_progress', action='store_true', help='no progress bars')
  p.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
  stem = os.path.splitext(args.out)[0]
  try:
    label_map = None
    if args.label_map:
      with open(args.label_map, encoding='utf-8') as f:
        label_map = json.load(f)
    classes = Classes.parse(args.classes, label_map)
    if args.library:
      named, skipped = tags.read_library(args.library, progress=not args.no_progress)
    else:
      named, skipped = tags.read_manifest(args.manifest, args.artist_column, args.path_column)
    mb = lookup.MusicBrainz(AnswerCache(stem + '_musicbrainz.sqlite'), args.server, args.rate,
                            args.contact)
    try:
      collector.label_files(named, skipped, mb, classes, args.out, stem + '_report.csv',
                            progress=not args.no_progress)
    finally:
      mb.cache.close()
  except (lookup.LookupStop, ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print('interrupted: rerun the same command to continue (finished lookups are kept)',
          file=sys.stderr)
    return 130
  return 0
