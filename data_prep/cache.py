"""Answers of a web API kept on disk, so a collector's rerun resumes.

Collectors (Spotify, MusicBrainz) ask slow, rate-limited services thousands of
questions. Every answer is stored here the moment it arrives, refusals (an
HTTP 403, 404 or 400) exactly like answers, so a rerun after a crash, Ctrl-C,
a rate-limit stop or a lapsed subscription replays what was settled and asks
only what was not. Facts learnt about the service (an endpoint refused, a
smaller page limit) are stored too, by name.

Nothing secret goes in: keys are method names and arguments, values are
response bodies. Credentials and tokens never pass through here.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

OK = 200


class AnswerCache:
  """A SQLite file of (key -> status, body) answers and (name -> value) facts."""

  def __init__(self, path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.path = path
    self.db = sqlite3.connect(path)
    self.db.execute('CREATE TABLE IF NOT EXISTS answers '
                    '(key TEXT PRIMARY KEY, status INTEGER, body TEXT)')
    self.db.execute('CREATE TABLE IF NOT EXISTS facts (name TEXT PRIMARY KEY, value TEXT)')
    self.db.commit()

  def get(self, key: str) -> tuple[int, Any] | None:
    """(status, body) stored for key, or None when it was never answered."""
    row = self.db.execute('SELECT status, body FROM answers WHERE key = ?', (key,)).fetchone()
    return None if row is None else (int(row[0]), json.loads(row[1]))

  def put(self, key: str, status: int, body: Any) -> None:
    """Stores and commits at once: a crash right after loses nothing."""
    self.db.execute('INSERT OR REPLACE INTO answers VALUES (?, ?, ?)',
                    (key, status, json.dumps(body)))
    self.db.commit()

  def fact(self, name: str) -> str | None:
    row = self.db.execute('SELECT value FROM facts WHERE name = ?', (name,)).fetchone()
    return None if row is None else row[0]

  def set_fact(self, name: str, value: str) -> None:
    self.db.execute('INSERT OR REPLACE INTO facts VALUES (?, ?)', (name, value))
    self.db.commit()

  def forget_refusals(self) -> int:
    """Drops every stored refusal and fact (the service may have changed its
    mind: a renewed subscription, a restored endpoint); answers stay."""
    count = self.db.execute('SELECT COUNT(*) FROM answers WHERE status != ?', (OK,)).fetchone()[0]
    self.db.execute('DELETE FROM answers WHERE status != ?', (OK,))
    self.db.execute('DELETE FROM facts')
    self.db.commit()
    return int(count)

  def close(self) -> None:
    self.db.close()
