"""MusicBrainz tags onto a class list.

MusicBrainz genres are the tags on its curated genre list, so the artist's
tags (with their vote counts) are what is mapped: each tag through the
spelling differences below, then the class list's label map (the metal set:
the reference's merges, e.g. blackgaze -> black metal, and drops); tags that
name no class are ignored. The label is the class with the most votes (ties:
the class list's order); the label set holds every class met.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from crnn_jax.core import labels

# MusicBrainz's spellings of tags the reference's Spotify queries spell otherwise.
SPELLINGS = {
    'funeral doom metal': 'funeral doom',
    'new wave of british heavy metal': 'nwobhm',
    'hip hop': 'rap',
    'hip-hop': 'rap',
    'rhythm and blues': 'r&b',
    'rhythm & blues': 'r&b',
    'contemporary r&b': 'r&b',
}
CLASS_LISTS = {'metal': (labels.METAL_SUBGENRES, labels.METAL_LABEL_MAP),
               'genres': (labels.GENRES, {})}


class Classes:
  """A class list and its label map (raw tag -> class name, or None to drop)."""

  def __init__(self, names: Sequence[str], label_map: Mapping[str, str | None] | None = None):
    self.names = tuple(names)
    self.label_map = dict(label_map or {})

  @classmethod
  def parse(cls, spec: str, label_map: Mapping[str, str | None] | None = None) -> Classes:
    """'metal', 'genres' or comma-separated class names (with an optional map)."""
    if spec in CLASS_LISTS:
      names, default_map = CLASS_LISTS[spec]
      return cls(names, label_map if label_map is not None else default_map)
    names = [c.strip() for c in spec.split(',') if c.strip()]
    if not names:
      raise ValueError("--classes: give 'metal', 'genres' or comma-separated class names")
    return cls(names, label_map)

  def of(self, tag: str) -> str | None:
    """The class a tag names, or None."""
    t = ' '.join(tag.lower().split())
    t = SPELLINGS.get(t, t)
    mapped = self.label_map.get(t, t)
    return mapped if mapped in self.names else None

  def label(self, tags: Sequence[tuple[str, int]]) -> tuple[str, list[str]] | None:
    """(label, label set) from (tag, votes) pairs; None when no tag names a class."""
    votes: dict[str, int] = {}
    for tag, count in tags:
      c = self.of(tag)
      if c is not None:
        votes[c] = max(votes.get(c, 0), int(count))
    if not votes:
      return None
    ranked = sorted(votes, key=lambda c: (-votes[c], self.names.index(c)))
    return ranked[0], ranked
