r"""``python -m crnn_jax.serve --model=genres`` (or ``--workdir=W``): the model's web
page on this machine.

  python -m crnn_jax.serve --model=genres                     # http://127.0.0.1:8000/
  python -m crnn_jax.serve --workdir=workdirs/demo
  python -m crnn_jax.serve --workdir=W --port=8080 --max_upload_mb=50

Loads the model once (a clear one-line error if there is none), compiles
it, then serves the page until Ctrl-C. It listens on 127.0.0.1 only unless
--host says otherwise; the page loads nothing from the internet and reports
nothing anywhere. It answers only requests that name it (localhost, an IP
address, the --host name, --allowed_hosts), and /api/ only with the token it
prints, which the page sends (crnn_jax.serve.guard): other sites cannot use it.
"""

from __future__ import annotations

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # before jax is imported

import socket
import sys
from collections.abc import Sequence

import numpy as np
from absl import flags

from crnn_jax.core.errors import UserError, run_command
from crnn_jax.inference.model import DEFAULT_BATCH_SIZE
from crnn_jax.inference.predictor import Predictor
from crnn_jax.pretrained import resolve, store

try:  # the 'serve' extra
  import uvicorn

  from crnn_jax.serve.app import DEFAULT_MAX_UPLOAD_MB, DEFAULT_WORKERS, create_app
except ImportError as missing:
  sys.exit(f"error: the web page needs {missing.name}: pip install -e '.[serve]'")


def check_port(host: str, port: int) -> None:
  """A UserError now rather than uvicorn's log line after the model has loaded."""
  try:
    with socket.create_server((host, port)):
      pass
  except OSError as e:
    raise UserError(f'cannot listen on {host}:{port} ({e.strerror or e}): choose another '
                    '--port or --host') from None


def serve_main(workdir: str | None, host: str = '127.0.0.1', port: int = 8000,
               max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, workers: int = DEFAULT_WORKERS,
               batch_size: int = DEFAULT_BATCH_SIZE, model: str | None = None,
               allowed_hosts: Sequence[str] = ()) -> None:
  resolve.check_one_named(model, workdir)
  if max_upload_mb <= 0 or workers < 1:
    raise UserError('--max_upload_mb must be positive and --workers at least 1')
  check_port(host, port)
  predictor = Predictor.load(model, workdir, batch_size=batch_size)
  loaded = predictor.model
  images = np.zeros((1, 128, loaded.frames), np.uint8)
  loaded.forward(images, np.zeros((1, loaded.num_tabular), np.float32) if loaded.num_tabular
                 else None)  # compile now, not during the first upload
  application = create_app(predictor, int(max_upload_mb * 2**20), workers, host=host,
                           allowed_hosts=allowed_hosts)
  url = f'http://{host}:{port}'
  print(f'crnn_jax: serving {model or workdir} at {url}/ (Ctrl-C stops)\n'
        f"crnn_jax: scripts send this run's token: curl -H 'Authorization: Bearer "
        f"{application.state.token}' --data-binary @song.mp3 '{url}/api/predict?name=song.mp3'",
        flush=True)
  uvicorn.run(application, host=host, port=port, log_level='warning')


def _define_flags() -> None:
  flags.DEFINE_string('model', None, f'A model shipped with crnn_jax: {", ".join(store.names())}. '
                      'Or give --workdir.')
  flags.DEFINE_string('workdir', None, 'A trained or imported model\'s workdir. Or give --model.')
  flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on (default: this machine only).')
  flags.DEFINE_integer('port', 8000, 'Port to listen on.')
  flags.DEFINE_float('max_upload_mb', DEFAULT_MAX_UPLOAD_MB, 'Largest upload accepted, in MB.')
  flags.DEFINE_integer('workers', DEFAULT_WORKERS, 'Uploads scored at the same time.')
  flags.DEFINE_integer('batch_size', DEFAULT_BATCH_SIZE, 'Windows per model call.')
  flags.DEFINE_list('allowed_hosts', [], 'More names the page is reached by (Host headers), '
                    'e.g. a name that points at this machine; * for any (unsafe: DNS rebinding).')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}: use --model or --workdir')
  f = flags.FLAGS
  serve_main(f.workdir, f.host, f.port, f.max_upload_mb, f.workers, f.batch_size, f.model,
             f.allowed_hosts)


def run() -> None:
  _define_flags()
  run_command(main)


if __name__ == '__main__':
  run()
