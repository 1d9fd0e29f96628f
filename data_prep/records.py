"""What a source reader hands the build: tracks before decoding, and problems."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Track:
  """One input track, before decoding. ``tabular`` holds raw source values
  (strings from a CSV, or numbers), converted and checked later."""
  track_id: str
  path: str
  label: str
  labels: tuple[str, ...]
  artist_id: str
  origin: str  # where it came from, for the report: a path or 'file.csv:row 7'
  tabular: dict[str, Any] = dataclasses.field(default_factory=dict)
  artist_known: bool = False  # False: artist_id is the track id (no artist information)
  split: str = ''  # the source's official split ('train', 'validation', 'test'), if it has one


@dataclasses.dataclass
class Problem:
  """A skipped input: one row of the bad-input report."""
  origin: str
  track_id: str
  reason: str

  @property
  def kind(self) -> str:
    """The reason without its details, to count skips by kind."""
    return self.reason.split(':')[0].split(' (')[0].strip()


@dataclasses.dataclass
class Source:
  """What a source reader found: tracks, problems, and its tabular columns."""
  tracks: list[Track]
  problems: list[Problem]
  tabular_columns: tuple[str, ...] = ()
  description: str = ''
