"""Prediction speed: crnn_jax against the PyTorch port on the same 30-s MP3s.

  python -m benchmarks.bench_predict [--files=32] [--batch_size=16] [--rounds=2]
      [--folder=DIR] [--checkpoint=crnn_genre_model.pth]

The reference genre model (its checkpoint, docs/reference.md section 8, when
present, else random weights; converted torch -> flax, so both sides hold the
same weights) scores the same files three ways, the contestants taking turns
round by round:
  end to end   files/s from file names to per-file genre scores. crnn_jax:
               ``Predictor.predict_files`` (decoding threads ahead, windows of
               several files per batch, one compiled shape). PyTorch: the port
               in crnn_jax/reference/torch_model.py behind the same decoding and
               spectrogram code (crnn_jax.core.audio) in the same number of
               threads, windows batched the same way, ``torch.no_grad``.
  model only   windows/s of the network on ready uint8 images, batch B.
  decoding     files/s of decode + spectrogram alone (one thread; shared code).
Both must agree: the table says how many files got the same top genre and the
largest probability difference. ``--fail_below=R`` exits with status 1 when
crnn_jax's end-to-end files/s is below R times PyTorch's, or the top genres
differ (a regression check that needs no absolute timings). Without --folder it generates MP3 clips shaped
like Spotify previews (44.1 kHz stereo, 30 s) with benchmarks.prepare_throughput.
"""

from __future__ import annotations

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # as the prediction command does, before jax is imported

import argparse
import concurrent.futures
import datetime
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
import torch

from benchmarks.prepare_throughput import make_clips
from configs import genres
from crnn_jax.core import audio, labels
from crnn_jax.inference.inputs import expand_inputs
from crnn_jax.inference.model import InferenceModel
from crnn_jax.inference.predictor import Predictor
from crnn_jax.reference import torch_model, weights

CHECKPOINT = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'reference',
                          'checkpoints', 'crnn_genre_model.pth')


def load_models(checkpoint: str, batch_size: int) -> tuple[Predictor, torch.nn.Module, str]:
  """The same weights on both sides: the reference checkpoint, else random."""
  if os.path.isfile(checkpoint):
    net, source = torch_model.load_reference_model(checkpoint), 'reference checkpoint'
  else:
    torch.manual_seed(0)
    net, source = torch_model.GenreCRNN().eval(), 'random weights (no checkpoint)'
  state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
  data_info = {'name': 'bench', 'class_names': list(labels.GENRES), 'num_tabular': 0,
               'categorical_encoding': 'raw', 'split_sizes': {},
               'frames': audio.num_frames(), 'metadata': {'clip': {'seconds': 30.0}}}
  model = InferenceModel(genres.get_config(), weights.to_flax(state), data_info,
                         batch_size=batch_size)
  return Predictor(model), net, source


def prepare(path: str) -> np.ndarray:
  """decode + audible windows -> uint8 images, the code crnn_jax runs (audio.*)."""
  windows = audio.sliding_windows(audio.load_audio(path), audio.CLIP_SECONDS, 5.0)
  return np.stack([audio.spectrogram_image(w) for w in windows if not audio.is_silent(w)])


def torch_probabilities(net: torch.nn.Module, images: np.ndarray) -> np.ndarray:
  x = torch.from_numpy(images.astype(np.float32)[:, None] / 255.0)
  with torch.no_grad():
    return net(x).exp().numpy()


def torch_predict(net: torch.nn.Module, paths: Sequence[str], batch_size: int,
                  workers: int) -> list[np.ndarray]:
  """Per-file mean probabilities: threads decode ahead, windows share batches."""
  pending: list[tuple[int, np.ndarray]] = []
  scores: list[list[np.ndarray]] = [[] for _ in paths]

  def flush(items: list[tuple[int, np.ndarray]]) -> None:
    probs = torch_probabilities(net, np.stack([img for _, img in items]))
    for (owner, _), p in zip(items, probs):
      scores[owner].append(p)

  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for owner, images in enumerate(pool.map(prepare, paths)):
      pending += [(owner, img) for img in images]
      while len(pending) >= batch_size:
        flush(pending[:batch_size])
        del pending[:batch_size]
  if pending:
    flush(pending)
  return [np.mean(s, axis=0) for s in scores]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
  tic = time.perf_counter()
  out = fn()
  return time.perf_counter() - tic, out


def end_to_end(predictor: Predictor, net: torch.nn.Module, paths: list[str], batch: int,
               workers: int, rounds: int) -> dict[str, object]:
  times: dict[str, list[float]] = {'jax': [], 'torch': []}
  compile_s, _ = timed(lambda: predictor.predict_files(paths[:1], num_workers=workers))
  for _ in range(rounds):
    seconds, jax_results = timed(lambda: predictor.predict_files(paths, num_workers=workers))
    times['jax'].append(seconds)
    seconds, torch_scores = timed(lambda: torch_predict(net, paths, batch, workers))
    times['torch'].append(seconds)
  jax_scores = [np.array(list(r['probabilities'].values())) for r in jax_results]
  same = sum(int(a.argmax() == b.argmax()) for a, b in zip(jax_scores, torch_scores))
  diff = max(float(np.abs(a - b).max()) for a, b in zip(jax_scores, torch_scores))
  return {'times': times, 'first_call_s': compile_s, 'same_top1': same, 'max_prob_diff': diff}


def model_only(predictor: Predictor, net: torch.nn.Module, image: np.ndarray, batch: int,
               rounds: int) -> dict[str, list[float]]:
  images = np.repeat(image[None], batch, axis=0)
  predictor.model.forward(images)  # compiled
  torch_probabilities(net, images)  # warm
  times: dict[str, list[float]] = {'jax': [], 'torch': []}
  for _ in range(max(3, rounds)):
    times['jax'].append(timed(lambda: predictor.model.forward(images))[0])
    times['torch'].append(timed(lambda: torch_probabilities(net, images))[0])
  return times


def table(n_files: int, batch: int, e2e: dict, model: dict, decode_s: float) -> str:
  best = {k: min(v) for k, v in e2e['times'].items()}
  model_best = {k: statistics.median(v) for k, v in model.items()}
  e2e_row = (f'| end to end, files/s ({n_files} files, best of {len(e2e["times"]["jax"])} '
             f'rounds) | {n_files / best["jax"]:.2f} | {n_files / best["torch"]:.2f} | '
             f'{best["torch"] / best["jax"]:.2f}x |')
  model_row = (f'| model only, windows/s (batch {batch}, median) | '
               f'{batch / model_best["jax"]:.2f} | {batch / model_best["torch"]:.2f} | '
               f'{model_best["torch"] / model_best["jax"]:.2f}x |')
  decode_row = (f'| decode + spectrogram, files/s (1 thread, shared code) | {1 / decode_s:.2f} | '
                f'{1 / decode_s:.2f} | 1.00x |')
  rows = ['| measure | crnn_jax | PyTorch port | crnn_jax / PyTorch |', '|---|---|---|---|',
          e2e_row, model_row, decode_row]
  notes = (f'first crnn_jax call (1 file, compile included): {e2e["first_call_s"]:.1f} s; '
           f'same top genre on {e2e["same_top1"]}/{n_files} files, largest probability '
           f'difference {e2e["max_prob_diff"]:.1e}')
  return '\n'.join(rows) + '\n\n' + notes


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--files', type=int, default=32, help='MP3 clips to generate')
  parser.add_argument('--folder', default='', help='score these audio files instead')
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1),
                      help='decoding threads, both sides')
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--checkpoint', default=CHECKPOINT)
  parser.add_argument('--fail_below', type=float, default=0.0,
                      help='exit 1 if crnn_jax / PyTorch end to end is below this ratio')
  args = parser.parse_args()
  predictor, net, source = load_models(args.checkpoint, args.batch_size)
  with tempfile.TemporaryDirectory() as scratch:
    if args.folder:
      paths = [p for p, error in expand_inputs([args.folder]) if error is None]
    else:
      print(f'writing {args.files} 30-s MP3 clips (44.1 kHz stereo)...', flush=True)
      paths = make_clips(scratch, args.files)
    decode_s = statistics.median(timed(lambda p=p: prepare(p))[0] for p in paths[:4])
    e2e = end_to_end(predictor, net, paths, args.batch_size, args.workers, args.rounds)
    model = model_only(predictor, net, prepare(paths[0])[0], args.batch_size, args.rounds)
  print(f'{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs; '
        f'jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} '
        f'({torch.get_num_threads()} threads); {source}; {args.workers} decoding threads')
  print(table(len(paths), args.batch_size, e2e, model, decode_s))
  ratio = min(e2e['times']['torch']) / min(e2e['times']['jax'])
  if ratio < args.fail_below or e2e['same_top1'] != len(paths):
    raise SystemExit(f'regression: crnn_jax / PyTorch end to end {ratio:.2f}x (--fail_below '
                     f'{args.fail_below}), same top genre on {e2e["same_top1"]}/{len(paths)}')


if __name__ == '__main__':
  main()
