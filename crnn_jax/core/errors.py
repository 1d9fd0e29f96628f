"""Errors meant for the user, and the one way a command prints them: one line, no traceback."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

from absl import app, logging


class UserError(Exception):
  """Something the user can fix (a path, a config field, a data set); the
  message says what is wrong and what to do."""


def one_line(text: object) -> str:
  """An error's text on one line (a library's message may span several)."""
  return ' '.join(str(text).split())


def run_command(main: Callable[[list[str]], int | None]) -> None:
  """Runs an absl command: its flags parsed, absl logging at warnings, and a
  UserError printed as ``error: ...`` on one line with exit status 2 instead of
  a traceback; otherwise ``main``'s return value is the exit status."""

  def guarded(argv: list[str]) -> int | None:
    logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except UserError as e:
      print(f'error: {one_line(e)}', file=sys.stderr)
      # Work the error cut short (orbax's reads and writes of a refused save) is
      # left as coroutines that Python collects at exit with a RuntimeWarning:
      # two lines of noise after the one that says what to do.
      warnings.filterwarnings('ignore', message='coroutine .* was never awaited',
                              category=RuntimeWarning)
      return 2

  app.run(guarded)
