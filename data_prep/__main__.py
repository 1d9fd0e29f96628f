"""``python -m data_prep <command>``: collect and prepare music data sets.

Commands:
  build    a folder (one sub-folder per label) or a manifest CSV -> TFDS data set
  spotify  collect a track table and previews from the Spotify Web API
  match    fill a track table's path column from a local library (no previews today)
  musicbrainz  label a local library by its artists' MusicBrainz genres (no Spotify)

``python -m data_prep <command> --help`` lists each command's options.
"""

from __future__ import annotations

import argparse
import sys

from data_prep import cli


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m data_prep', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
  cli.add_build_command(commands)
  cli.add_spotify_command(commands)
  cli.add_match_command(commands)
  cli.add_musicbrainz_command(commands)
  args = parser.parse_args(argv)
  return args.run(args)


if __name__ == '__main__':
  sys.exit(main())
