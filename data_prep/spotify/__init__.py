"""Collecting labelled tracks from the Spotify Web API, in every era of it
(``python -m data_prep spotify``). docs/architecture.md lists the modules.

The API as it is in each era is modelled by ``data_prep.testing.fake_spotify``,
which the tests use and anyone can start to watch a run end to end.
"""
