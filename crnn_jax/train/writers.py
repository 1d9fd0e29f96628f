"""What a run tells people: progress lines (process 0 only), TensorBoard event
files and metrics.jsonl."""

from __future__ import annotations

import json
import os
from typing import Any, Self

import jax
from tensorboardX import SummaryWriter

from crnn_jax.core import storage


def log(message: str) -> None:
  """Progress for people: printed by process 0 only."""
  if jax.process_index() == 0:
    print(message, flush=True)


class MetricWriters:
  """TensorBoard event files and metrics.jsonl; only process 0 writes."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0
    self._tb = None
    if self.enabled:
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()

  def epoch(self, history: list[dict[str, Any]]) -> None:
    if not self.enabled:
      return
    row = history[-1]
    for key, value in row.items():
      if isinstance(value, (int, float)) and key not in ('epoch', 'step'):
        self._tb.add_scalar(key, value, row['step'])
    self._tb.flush()
    self.rewrite_jsonl(history)

  def rewrite_jsonl(self, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl from the checkpointed history: a resumed run never
    duplicates or loses a line, even one lost to a kill after a save."""
    if not self.enabled:
      return
    with storage.atomic_write(os.path.join(self.workdir, 'metrics.jsonl')) as f:
      f.writelines(json.dumps(r, sort_keys=True) + '\n' for r in history)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
