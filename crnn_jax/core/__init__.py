"""Definitions every stage shares: the audio and tabular contracts, the class
lists, errors meant for the user, and file writing that a kill cannot tear.

Nothing here imports JAX, so data preparation and the entry points can use it
before (or without) starting an accelerator backend.
"""
