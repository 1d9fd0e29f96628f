"""Collecting labelled tracks from the Spotify Web API, in every era of it.

  command     ``python -m data_prep spotify``: flags -> collector.collect
  collector   one run: credentials, client, strategy, previews, table
  artists     the metal strategy (artist genres as labels)
  playlists   the genres strategy (playlists as labels)
  catalog     era-aware endpoint adapters: each says once what is refused and
              uses what is still served
  previews    30-second previews, where the API still gives them
  client      HTTP: answer/refusal cache, retries, 429/5xx, token renewal
  errors      stops, refusals and retries told apart
  table       tracks.csv and spotify_report.csv

The API as it is in each era is modelled by ``data_prep.testing.fake_spotify``,
which the tests use and anyone can start to watch a run end to end.
"""
