"""Errors meant for the user: main.py prints them as one line, no traceback."""


class UserError(Exception):
  """Something the user can fix (a path, a config field, a data set); the
  message says what is wrong and what to do."""
