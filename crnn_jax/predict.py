r"""``python -m crnn_jax.predict``: genres of your own audio files, from a model
shipped with crnn_jax (--model) or a trained or imported workdir (--workdir).

  python -m crnn_jax.predict --model=genres song.mp3 more_songs/
  python -m crnn_jax.predict --workdir=workdirs/demo demo_data/audio
  python -m crnn_jax.predict --workdir=DIR --top_k=3 --format=json song.mp3 more/
  python -m crnn_jax.predict --workdir=workdirs/reference_metal \
      --tabular_csv=tracks.csv previews/
  python -m crnn_jax.predict --workdir=DIR --embeddings=emb.npz music/   # or .parquet

What happens to each file is crnn_jax.inference's job (inference/predictor.py
says how windows, tabular inputs and scores work; inference/embeddings.py what
--embeddings writes); this module parses flags and prints. A file that cannot
be scored gets one line on stderr (and an "error" entry with --format=json);
the others are still scored. The last line (text) says how many files were
scored and how fast ('scored', 'failed', 'files_per_second' in json). File
names that are not UTF-8 are printed as their own bytes. Exit status: 0 if any
file was scored, 1 if none, 2 for a usage or workdir problem.
"""

from __future__ import annotations

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # before jax is imported

import contextlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

from absl import flags
from tqdm import tqdm

from crnn_jax.core.errors import UserError, run_command
from crnn_jax.inference import embeddings as embeddings_lib
from crnn_jax.inference.embeddings import Embeddings
from crnn_jax.inference.inputs import expand_inputs
from crnn_jax.inference.model import DEFAULT_BATCH_SIZE
from crnn_jax.inference.predictor import Predictor
from crnn_jax.pretrained import resolve, store


def format_text(result: Mapping[str, Any]) -> str:
  """A scored file as a few readable lines."""
  n = result['windows']
  lines = [f'{result["file"]}  ({"1 window" if n == 1 else f"{n} windows averaged"})']
  if 'above_threshold' in result:
    above = ', '.join(f'{e["genre"]} {e["probability"]:.4f}' for e in result['above_threshold'])
    lines.append(f'  at or above {result["threshold"]:.3g}: {above or "none"}')
  width = max(len(e['genre']) for e in result['top_k'])
  for rank, e in enumerate(result['top_k'], 1):
    lines.append(f'  {rank:2d}. {e["genre"]:<{width}}  {e["probability"]:.4f}')
  tab = result.get('tabular')
  if tab:
    text = f'  tabular inputs: {tab["source"]}'
    if tab.get('imputed'):
      text += f'; training mean (not estimable) for {", ".join(tab["imputed"])}'
    lines.append(text)
  return '\n'.join(lines) + '\n'


def predict_main(workdir: str | None, inputs: Sequence[str], top_k: int = 5, fmt: str = 'text',
                 batch_size: int = DEFAULT_BATCH_SIZE, tabular_csv: str | None = None,
                 num_workers: int | None = None, out: TextIO | None = None,
                 err: TextIO | None = None, predictor: Predictor | None = None,
                 embeddings: str | None = None, checkpoint: str = 'best',
                 model: str | None = None) -> int:
  """The command without absl: returns the exit status (0 if any file was scored).

  ``predictor`` (else the shipped ``model``, or ``workdir``'s ``checkpoint``:
  'best' or 'latest') lets a caller reuse a loaded model; ``embeddings`` names
  a .npz or .parquet file for the files' embeddings.
  """
  out = out or sys.stdout
  err = err or sys.stderr
  if predictor is None:
    resolve.check_one_named(model, workdir)
  _check_usage(fmt, inputs, tabular_csv)
  embeddings = embeddings_lib.target_path(embeddings) if embeddings else None
  predictor = predictor or Predictor.load(model, workdir, batch_size=batch_size,
                                          checkpoint=checkpoint)
  model = predictor.model
  header = model.describe()
  if tabular_csv and not model.num_tabular:
    print('note: this model has no tabular inputs; --tabular_csv is not used', file=err)
  if fmt == 'text':
    print(_text_header(header, model), file=out, flush=True)
  start = time.perf_counter()
  results, scored = [], 0
  collected = Embeddings.empty(model) if embeddings else None
  entries = expand_inputs(inputs)
  # A bar only where it disturbs nothing: a terminal on stderr, results going elsewhere.
  bar = tqdm(total=len(entries), unit='file', file=err, leave=False,
             disable=not (_is_terminal(err) and (fmt == 'json' or not _is_terminal(out))))
  for result in predictor.iter_predict_entries(entries, tabular_csv, top_k, num_workers,
                                               details=collected is not None):
    bar.update(1)
    if collected is not None:
      collected.add(result)
      result.pop('details', None)  # its images and arrays are not for printing
    if 'error' in result:
      bar.write(f'error: {result["file"]}: {result["error"]}', file=err)
    else:
      scored += 1
      if fmt == 'text':
        out.write(format_text(result))
        out.flush()
    results.append(result)
  bar.close()
  seconds = time.perf_counter() - start
  if collected is not None and scored:
    collected.save(embeddings)
  speed = {'seconds': round(seconds, 3), 'files_per_second': round(len(results) / seconds, 3)}
  if fmt == 'json':
    json.dump({**header, 'scored': scored, 'failed': len(results) - scored, **speed,
               'results': results}, out, indent=2)
    out.write('\n')
  else:
    print(_summary_line(scored, len(results), seconds, embeddings), file=out)
  if not scored:
    print(f'error: none of {len(results)} input(s) could be scored', file=err)
  return 0 if scored else 1


def _check_usage(fmt: str, inputs: Sequence[str], tabular_csv: str | None) -> None:
  """Mistakes that need no model: a UserError before anything loads."""
  if fmt not in ('text', 'json'):
    raise UserError(f"--format {fmt!r}: use 'text' or 'json'")
  if not inputs:
    raise UserError('give at least one audio file or folder to score')
  if tabular_csv and not os.path.isfile(tabular_csv):
    raise UserError(f'--tabular_csv {tabular_csv!r} does not exist')


def _summary_line(scored: int, total: int, seconds: float, embeddings: str | None) -> str:
  """The text output's last line: how many were scored, how fast, what else to look at."""
  rate = total / seconds
  shown = f'{rate:.2f}' if rate >= 1 else f'{rate:.2g}'  # 0.0041, not 0.00, on a slow machine
  line = f'# scored {scored} of {total} file(s) in {seconds:.1f} s ({shown} files/s)'
  if scored < total:
    line += f'; {total - scored} could not be scored (reasons on stderr)'
  if embeddings and scored:
    line += f'; embeddings in {embeddings}'
  return line


def _is_terminal(stream: TextIO) -> bool:
  return bool(getattr(stream, 'isatty', lambda: False)())


def _text_header(header: Mapping[str, Any], model: Any) -> str:
  line = (f'# {len(header["classes"])} classes, {header["scores"]}, '
          f'{header["clip_seconds"]:g} s windows')
  if header.get('average_of'):
    line += f'; the average of {header["average_of"]} networks'
  if model.multilabel:
    line += f'; threshold {model.threshold:.3g} {model.threshold_source}'
  return line


# What libmpg123 (inside libsndfile) writes straight to file descriptor 2
# while failing on a corrupt MP3; the file's own one-line error says it all.
_DECODER_CHATTER = re.compile(rb'^(Note: |\[src/libmpg123/)')


@contextlib.contextmanager
def _without_decoder_chatter() -> Iterator[None]:
  """Passes stderr through a filter that drops libmpg123's notes (C code
  writing to fd 2 cannot be silenced from Python any other way)."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):
    yield
    return
  read_fd, write_fd = os.pipe()
  os.dup2(write_fd, 2)
  os.close(write_fd)

  def pump() -> None:
    with os.fdopen(read_fd, 'rb', buffering=0) as source:
      for line in source:
        if not _DECODER_CHATTER.match(line):
          os.write(saved, line)

  thread = threading.Thread(target=pump, name='stderr-filter', daemon=True)
  thread.start()
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)  # the pipe's last write end closes: the pump sees EOF
    thread.join(timeout=5)
    os.close(saved)


def _define_flags() -> None:
  flags.DEFINE_string('model', None, f'A model shipped with crnn_jax: {", ".join(store.names())} '
                      '(crnn_jax/pretrained/README.md). Or give --workdir.')
  flags.DEFINE_string('workdir', None, 'A trained or imported model\'s workdir. Or give --model.')
  flags.DEFINE_integer('top_k', 5, 'How many genres to print per file.')
  flags.DEFINE_enum('format', 'text', ['text', 'json'], 'text for people, json for programs.')
  flags.DEFINE_integer('batch_size', DEFAULT_BATCH_SIZE,
                       'Windows per model call (every call has this size; the last is padded).')
  flags.DEFINE_string('tabular_csv', None,
                      'Models with tabular inputs: a CSV with a path/file/track_id/id column and '
                      'the model\'s tabular columns; else they are estimated from the audio.')
  flags.DEFINE_integer('num_workers', None, 'Decoding threads (default: up to 4).')
  flags.DEFINE_string('embeddings', None,
                      'Also write each file\'s window and track embeddings (the classifier '
                      'layer\'s input) to this .npz or .parquet file (no extension: .npz).')
  flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'],
                    'best: the best epoch by validation where the run kept one, else the latest.')


def main(argv: list[str]) -> int:
  for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8: their own bytes
    stream.reconfigure(errors='surrogateescape')
  f = flags.FLAGS
  with _without_decoder_chatter():
    return predict_main(f.workdir, argv[1:], top_k=f.top_k, fmt=f.format,
                        batch_size=f.batch_size, tabular_csv=f.tabular_csv,
                        num_workers=f.num_workers, embeddings=f.embeddings,
                        checkpoint=f.checkpoint, model=f.model)


def run() -> None:
  _define_flags()
  run_command(main)


if __name__ == '__main__':
  run()
