"""Stopping a run cleanly: Ctrl-C / SIGTERM at a step boundary, and the errors
the loop stops with."""

from __future__ import annotations

import signal
from typing import Any, Self

import jax
import numpy as np
from jax.experimental import multihost_utils

from crnn_jax.core.errors import UserError
from crnn_jax.train.writers import log


class TrainingDiverged(UserError):
  """The loss became NaN or infinite."""


class Interrupted(Exception):
  """Ctrl-C or SIGTERM: the state was saved; rerunning resumes."""


class StopRequest:
  """Ctrl-C and SIGTERM ask the loop to stop at the next step boundary.

  A handler that raised would land anywhere: inside a step whose donated
  input is already gone, between a step and its bookkeeping (a resume would
  replay that batch), or in a save. So the handlers only set a flag, and the
  loop saves and stops where state and position agree. A second Ctrl-C stops
  at once, without saving.
  """

  def __init__(self):
    self.signal_name: str | None = None
    self._old: dict[int, Any] = {}

  def __enter__(self) -> Self:
    for sig in (signal.SIGINT, signal.SIGTERM):
      self._old[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._old.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signal_name is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal_name = signal.Signals(signum).name
    log(f'\n{self.signal_name}: stopping after this step (again to stop without saving)')

  def should_stop(self, collective: bool = True) -> bool:
    """Whether any process was asked: all of them then save at the same step.

    With several processes that takes an all-gather, a wait for every device,
    so the loop asks for it (``collective``) only where it reads metrics back
    anyway; elsewhere the answer is False until then. One process only reads
    its flag.
    """
    asked = self.signal_name is not None
    if jax.process_count() > 1:
      if not collective:
        return False
      asked = bool(np.any(multihost_utils.process_allgather(np.int32(asked))))
    return asked
