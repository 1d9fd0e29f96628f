r"""Train crnn_jax and the PyTorch port on the same data, same order, same start.

  python -m benchmarks.compare_training --seeds=0,1 [--epochs=8]

Issue 5's end-to-end check: on the demo data set (built by ``python main.py
--config=configs/demo.py`` or ``data_prep`` if missing), for each seed,
  - crnn_jax trains with ``crnn_jax.train.trainer.train_and_evaluate`` (the project's
    own loop, configs/demo.py, PyTorch's running-variance update switched on);
  - the port (crnn_jax/reference/torch_model.py) starts from the same initial
    weights (crnn_jax's init converted with crnn_jax.reference.weights), sees
    the same batches in the same order (``crnn_jax.data.pipeline.epoch_order``), and
    trains with fastai v1's AdamW and one-cycle schedule;
then both are scored on the same test split. Differences come from float
rounding only (it compounds over training); the seed-to-seed spread shows
what "within noise" means.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def split_arrays(source, info) -> tuple[np.ndarray, np.ndarray]:
  """(N, 1, 128, frames) float32 in [0, 1], (N,) int64: what the port eats."""
  from crnn_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  to_inputs = pipeline.ToModelInputs(info)
  rows = [to_inputs.map(source[i]) for i in range(len(source))]
  spec = np.stack([r['spectrogram'] for r in rows]).astype(np.float32)[:, None] / 255.0
  return spec, np.asarray([r['label'] for r in rows], np.int64)


def run_seed(seed: int, epochs: int | None, channels_last_control: bool = False
             ) -> dict[str, float]:
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  from configs import demo  # pylint: disable=import-outside-toplevel
  from crnn_jax.data import pipeline, source  # pylint: disable=import-outside-toplevel
  from crnn_jax.reference import torch_model as tr  # pylint: disable=import-outside-toplevel
  from crnn_jax.reference import weights as reference_weights  # pylint: disable=import-outside-toplevel
  from crnn_jax.train import state as state_lib  # pylint: disable=import-outside-toplevel
  from crnn_jax.train import trainer  # pylint: disable=import-outside-toplevel

  config = demo.get_config()
  config.seed = seed
  config.model.bn_unbiased_running_var = True
  if epochs:
    config.train.num_epochs = epochs
  info = source.load_info(config)
  sources = source.open_sources(config)
  t = config.train
  steps_per_epoch = info.split_sizes['train'] // t.batch_size

  # the port: same initial weights, same batches, the reference's optimiser
  state = state_lib.create_train_state(
      config, info, jax.random.key(config.seed),
      state_lib.make_optimizer(config, steps_per_epoch * t.num_epochs))
  start = reference_weights.to_torch(jax.device_get(
      {'params': state.params, 'batch_stats': state.batch_stats}))
  def port_from_start(channels_last: bool):
    port = tr.GenreCRNN(num_classes=len(info.class_names), frames=info.frames)
    port.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in start.items()})
    return port.to(memory_format=torch.channels_last) if channels_last else port

  port = port_from_start(False)
  train_labels = source.read_labels(sources['train'])
  orders = [pipeline.epoch_order(train_labels, config.seed, e) for e in range(t.num_epochs)]
  x_train, y_train = split_arrays(sources['train'], info)
  x_test, y_test = split_arrays(sources['test'], info)
  tic = time.perf_counter()
  losses = tr.fit_one_cycle(port, tr.Arrays(x_train, y_train), t.num_epochs, t.max_lr,
                            batch_size=t.batch_size, weight_decay=t.weight_decay, orders=orders)
  torch_s = time.perf_counter() - tic
  log_probs = tr.predict_log_probs(port, tr.Arrays(x_test, y_test), t.eval_batch_size)
  control = {}
  if channels_last_control:
    # The same model, start and order with only the rounding changed (other
    # convolution kernels): how far float noise alone carries a run.
    port_cl = port_from_start(True)
    tr.fit_one_cycle(port_cl, tr.Arrays(x_train, y_train), t.num_epochs, t.max_lr,
                     batch_size=t.batch_size, weight_decay=t.weight_decay, orders=orders)
    lp_cl = tr.predict_log_probs(port_cl, tr.Arrays(x_test, y_test), t.eval_batch_size)
    control = {'torch_cl_top1': tr.accuracy(lp_cl, y_test, 1),
               'torch_cl_test_loss': float(-lp_cl[np.arange(len(y_test)), y_test].mean())}

  with tempfile.TemporaryDirectory() as workdir:
    tic = time.perf_counter()
    results = trainer.train_and_evaluate(config, workdir)
    jax_s = time.perf_counter() - tic
  return {
      'seed': seed, 'test_clips': len(y_test), 'epochs': t.num_epochs,
      'jax_top1': float(results['test']['top1']),
      'torch_top1': tr.accuracy(log_probs, y_test, 1),
      'jax_test_loss': float(results['test']['loss']),
      'torch_test_loss': float(-log_probs[np.arange(len(y_test)), y_test].mean()),
      'torch_last_epoch_train_loss': float(np.mean(losses[-steps_per_epoch:])),
      'jax_seconds': jax_s, 'torch_seconds': torch_s, **control,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', default='0')
  parser.add_argument('--epochs', type=int, default=0, help='0: the demo config (8)')
  parser.add_argument('--channels_last_control', action='store_true',
                      help='also train the port in channels_last: a torch-vs-torch noise baseline')
  parser.add_argument('--json', default='')
  args = parser.parse_args()
  rows = []
  for seed in (int(s) for s in args.seeds.split(',')):
    rows.append(run_seed(seed, args.epochs or None, args.channels_last_control))
    print(json.dumps(rows[-1]), flush=True)
  print('| seed | epochs | test clips | JAX top-1 | torch top-1 | torch CL top-1 | JAX test loss '
        '| torch test loss | torch CL test loss |')
  print('|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    cl_top1 = f'{r["torch_cl_top1"]:.4f}' if 'torch_cl_top1' in r else '-'
    cl_loss = f'{r["torch_cl_test_loss"]:.4f}' if 'torch_cl_test_loss' in r else '-'
    print(f'| {r["seed"]} | {r["epochs"]} | {r["test_clips"]} | {r["jax_top1"]:.4f} | '
          f'{r["torch_top1"]:.4f} | {cl_top1} | {r["jax_test_loss"]:.4f} | '
          f'{r["torch_test_loss"]:.4f} | {cl_loss} |')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  main()
