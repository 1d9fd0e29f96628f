"""Genre labels without a Spotify account: a library's artists on MusicBrainz.

  command     ``python -m data_prep musicbrainz``
  collector   artists -> MusicBrainz artist -> label; manifest and report
  lookup      musicbrainzngs: user agent, 1 request/s, cached searches
  genres      MusicBrainz tags onto a class list (the metal merges included)
  tags        artist names from file tags (mutagen) or a manifest column
"""
