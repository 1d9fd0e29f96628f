"""Local fakes of the web services data_prep collects from, for tests and demos.

  fake_spotify        the Spotify Web API in each era (2020, 2024-11, 2026 dev mode)
  spotify_objects     its JSON objects as each era shapes them
  spotify_catalogue   what it serves, and a synthetic local library for it
  fake_musicbrainz    the MusicBrainz XML web service (search, lookup, 503s)
  server              the local HTTP server both run on

Each runs as a command (``python -m data_prep.testing.fake_spotify``) so a
collection can be watched end to end without an account.
"""
