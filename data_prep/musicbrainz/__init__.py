"""Genre labels without a Spotify account: a library's artists on MusicBrainz
(``python -m data_prep musicbrainz``). docs/architecture.md lists the modules."""
