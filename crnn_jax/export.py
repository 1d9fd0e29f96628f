r"""``python -m crnn_jax.export``: a model as files that run without crnn_jax.

  python -m crnn_jax.export --model=genres --out=exports/genres
  python -m crnn_jax.export --workdir=workdirs/demo --out=exports/demo
  python -m crnn_jax.export --workdir=W --out=DIR --formats=stablehlo   # without jax2onnx

Writes into a new folder (an existing one is refused unless --overwrite, which
replaces only an earlier export):
  model.onnx        ONNX (opset 23), runs with onnxruntime alone: no JAX
  model.jaxexport   StableHLO via jax.export (jax.export.deserialize(...).call),
                    for JAX/XLA users; CPU and CUDA
  model.json        everything around the model: classes, inputs and outputs,
                    the spectrogram contract (crnn_jax.core.audio), window
                    length, tabular names, statistics and encoding
  README.md         how to use them
  LICENSE           a shipped model's license (its weights are the reference's, MIT)

Both models map the model input (batch, 128, frames), float32 = uint8
spectrogram image / 255 [+ encoded tabular (batch, k)] to ``log_probs``
(batch, classes) and ``embedding`` (batch, D), the classifier layer's input;
the batch size is free, the frames fixed by the model's window. They compute
InferenceModel.log_probs_and_embeddings, the function prediction runs.

jax2onnx cannot trace flax's ``nn.RNN`` itself (it replaces ``jnp.shape``
while tracing, which breaks flax's scan), so the function is first traced by
JAX (``jax.make_jaxpr``, with a symbolic batch size) and jax2onnx converts
that program: the GRU's scan becomes an ONNX Loop, the model is unchanged.
Initializers no node reads (constants of the scan that the Loop body never
uses) are dropped, so onnxruntime loads the file without a warning.
After writing, both files are run on a random batch and compared with JAX.
"""

from __future__ import annotations

from crnn_jax.core import xla_defaults

xla_defaults.apply()  # before jax is imported

import contextlib
import datetime
import json
import logging as std_logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax import export as jax_export

from crnn_jax.core import audio, storage, tabular
from crnn_jax.core.errors import UserError, run_command
from crnn_jax.inference.model import InferenceModel
from crnn_jax.pretrained import resolve, store

try:  # optional: installed with --no-deps (README, Export); ONNX export needs it
  import jax2onnx
except ImportError:
  jax2onnx = None
try:  # the 'export' extra; needed to check the ONNX file
  import onnxruntime
except ImportError:
  onnxruntime = None

FORMATS = ('onnx', 'stablehlo')
ONNX_FILE, STABLEHLO_FILE, CONTRACT_FILE, README_FILE, LICENSE_FILE = (
    'model.onnx', 'model.jaxexport', 'model.json', 'README.md', 'LICENSE')
INPUT_NAMES = ('spectrogram', 'tabular')
OUTPUT_NAMES = ('log_probs', 'embedding')
PLATFORMS = ('cpu', 'cuda')
JAX2ONNX_INSTALL = ("pip install -e '.[export]' && pip install --no-deps jax2onnx==0.17.1")


# ---------------------------------------------------------------- the function
def exported_function(model: InferenceModel) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """(spectrogram[, tabular]) -> (log_probs, embedding), as the files compute it."""
  if model.num_tabular:
    return lambda spectrogram, tab: model.log_probs_and_embeddings(spectrogram, tab)
  return lambda spectrogram: model.log_probs_and_embeddings(spectrogram)


def input_specs(model: InferenceModel) -> list[jax.ShapeDtypeStruct]:
  """Input shapes with a symbolic batch size."""
  batch, = jax_export.symbolic_shape('batch')
  specs = [jax.ShapeDtypeStruct((batch, audio.N_MELS, model.frames), jnp.float32)]
  if model.num_tabular:
    specs.append(jax.ShapeDtypeStruct((batch, model.num_tabular), jnp.float32))
  return specs


def to_stablehlo(model: InferenceModel) -> bytes:
  exported = jax_export.export(jax.jit(exported_function(model)), platforms=PLATFORMS)(
      *input_specs(model))
  try:
    return bytes(exported.serialize())
  except ImportError:  # flatbuffers
    raise UserError("StableHLO export needs flatbuffers: pip install -e '.[export]'") from None


def to_onnx(model: InferenceModel, contract: dict[str, Any]) -> bytes:
  """Traced by JAX first, then converted (module docstring: why)."""
  if jax2onnx is None:
    raise UserError(f'ONNX export needs jax2onnx: {JAX2ONNX_INSTALL} (or --formats=stablehlo)')
  specs = input_specs(model)
  closed = jax.make_jaxpr(exported_function(model))(*specs)

  def program(*args: jax.Array) -> tuple[jax.Array, ...]:
    return tuple(jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *args))

  with _quiet_converters(), contextlib.redirect_stdout(sys.stderr):
    proto = jax2onnx.to_onnx(program, inputs=specs, input_names=list(INPUT_NAMES[:len(specs)]),
                             output_names=list(OUTPUT_NAMES), model_name='crnn_jax')
  drop_unused_initializers(proto.graph)
  entry = proto.metadata_props.add()
  entry.key, entry.value = 'crnn_jax', json.dumps(contract)
  return proto.SerializeToString()


def drop_unused_initializers(graph: Any) -> int:
  """Removes the initializers no node reads, in ``graph`` (an ONNX GraphProto)
  and the graphs nested in its nodes (the GRU's Loop body); returns how many.

  jax2onnx leaves constants of the traced scan that the Loop body never uses;
  onnxruntime would drop them itself, with one warning each on every load.
  A nested graph may read its outer graphs' initializers, so a name counts as
  used where any node below reads it."""
  removed = sum(drop_unused_initializers(sub) for sub in _subgraphs(graph))
  used = _names_read(graph) | {i.name for i in graph.input}
  kept = [init for init in graph.initializer if init.name in used]
  removed += len(graph.initializer) - len(kept)
  del graph.initializer[:]
  graph.initializer.extend(kept)
  return removed


def _subgraphs(graph: Any) -> list[Any]:
  return [sub for node in graph.node for attr in node.attribute
          for sub in ([attr.g] if attr.HasField('g') else []) + list(attr.graphs)]


def _names_read(graph: Any) -> set[str]:
  """Every value name a node of ``graph`` or of a graph nested in it reads,
  and the graph's outputs."""
  names = {o.name for o in graph.output}
  names.update(name for node in graph.node for name in node.input)
  for sub in _subgraphs(graph):
    names |= _names_read(sub)
  return names


@contextlib.contextmanager
def _quiet_converters() -> Iterator[None]:
  """jax2onnx logs a traceback for each optional plugin it cannot import
  (equinox, dm-pix: not needed here) and onnx_ir notes on untyped shapes."""
  loggers = [std_logging.getLogger(name) for name in ('jax2onnx', 'onnx_ir')]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(std_logging.ERROR)
  try:
    yield
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


# ---------------------------------------------------------------- the JSON
def contract(model: InferenceModel, formats: Sequence[str]) -> dict[str, Any]:
  """model.json: what the files compute and how to feed them."""
  frames, classes = model.frames, len(model.class_names)
  inputs = [{'name': INPUT_NAMES[0], 'dtype': 'float32', 'shape': ['batch', audio.N_MELS, frames],
             'is': 'the uint8 spectrogram image / 255 (see spectrogram)'}]
  if model.num_tabular:
    inputs.append({'name': INPUT_NAMES[1], 'dtype': 'float32',
                   'shape': ['batch', model.num_tabular], 'is': 'encoded tabular values '
                   '(see tabular); the same row for every window of a track'})
  out = {
      'format': 'crnn_jax export', 'version': 1,
      'created': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
      'files': {name: file for name, file in (('onnx', ONNX_FILE), ('stablehlo', STABLEHLO_FILE))
                if name in formats},
      'stablehlo_platforms': list(PLATFORMS), 'jax_version': jax.__version__,
      'inputs': inputs,
      'outputs': [
          {'name': OUTPUT_NAMES[0], 'dtype': 'float32', 'shape': ['batch', classes],
           'is': 'log-sigmoid per class' if model.multilabel else 'log-softmax over classes'},
          {'name': OUTPUT_NAMES[1], 'dtype': 'float32', 'shape': ['batch',
                                                                   model.embedding_size],
           'is': model.embedding_description()}],
      'classes': list(model.class_names), 'multilabel': model.multilabel,
      'track_score': 'mean over the windows of exp(log_probs)',
      'spectrogram': audio.spectrogram_contract(model.clip),
      'model': {'readout': model.model.readout, 'num_tabular': model.num_tabular,
                'compute_dtype': str(jnp.dtype(model.model.dtype)),
                'networks': len(model.members)},
  }
  if len(model.members) > 1:
    out['model']['combined_by'] = ('log_probs: the log of the mean of the networks\' '
                                   'probabilities; embedding: theirs side by side')
  if model.multilabel:
    out['threshold'] = model.threshold
    out['label_hierarchy'] = dict(model.config.get('label_hierarchy') or {})
    out['track_score'] += ('; then each parent in label_hierarchy (child: parent) scores at '
                           'least the best of its descendants')
  if model.num_tabular:
    out['tabular'] = tabular.contract(model.metadata, model.info.categorical_encoding)
  return out


def readme(data: dict[str, Any]) -> str:
  """README.md of an export folder: the files and a use without crnn_jax."""
  feed = "{'spectrogram': x}" + (", 'tabular': t" if 'tabular' in data else '')
  return f'''# crnn_jax export

{len(data['classes'])} classes ({'multi-label' if data['multilabel'] else 'single-label'}); \
windows of {data['spectrogram']['window']['seconds']:g} s \
({data['spectrogram']['window']['frames']} frames). Files: {', '.join(data['files'].values())}, \
model.json (classes, inputs, outputs, the spectrogram and tabular contracts).

```python
import json, librosa, numpy as np, onnxruntime as ort
c = json.load(open('model.json'))
s = c['spectrogram']
y, _ = librosa.load('song.mp3', sr=s['decode']['sample_rate'], res_type='soxr_hq')
n = s['window']['samples']                      # first window; average all full windows
window = np.pad(y[:n], (0, max(0, n - len(y))))
log = np.log(librosa.feature.melspectrogram(y=window, **s['melspectrogram'])
             + s['log']['epsilon']).astype(np.float32)
image = 255 - ((log - log.min()) / (log.max() - log.min()) * 255).astype(np.uint8)[::-1]
x = (image.astype(np.float32) / 255)[None]     # (1, {audio.N_MELS}, frames)
log_probs, embedding = ort.InferenceSession('model.onnx').run(None, {feed})
print(c['classes'][int(log_probs[0].argmax())])
```
{'The tabular input t is encoded as model.json says under tabular.' if 'tabular' in data else ''}
JAX users: `jax.export.deserialize(bytearray(open('model.jaxexport', 'rb').read())).call(x)`.
'''


# ---------------------------------------------------------------- writing
def check_target(out: str, overwrite: bool) -> None:
  """An existing --out is refused; --overwrite replaces only an earlier export."""
  if not out:
    raise UserError('--out is required: a new folder for the exported model')
  if not os.path.lexists(out):
    return
  if not overwrite:
    raise UserError(f'--out {out!r} exists: choose a new folder, or pass --overwrite to '
                    'replace the export in it')
  if not os.path.isfile(os.path.join(out, CONTRACT_FILE)):
    raise UserError(f'--out {out!r} exists and is not an earlier export (no {CONTRACT_FILE}); '
                    '--overwrite replaces only exports: choose a new folder')


def verify(model: InferenceModel, folder: str, formats: Sequence[str]) -> dict[str, float]:
  """Max |file - JAX| over both outputs, on a random batch of 3."""
  rng = np.random.default_rng(0)
  args = [rng.integers(0, 256, (3, audio.N_MELS, model.frames)).astype(np.float32) / 255]
  if model.num_tabular:
    args.append(rng.normal(size=(3, model.num_tabular)).astype(np.float32))
  expected = [np.asarray(x) for x in jax.jit(exported_function(model))(*args)]
  outputs = {}
  if 'stablehlo' in formats:
    with open(os.path.join(folder, STABLEHLO_FILE), 'rb') as f:
      outputs['stablehlo'] = jax_export.deserialize(bytearray(f.read())).call(*args)
  if 'onnx' in formats and onnxruntime is not None:
    session = onnxruntime.InferenceSession(os.path.join(folder, ONNX_FILE),
                                           providers=['CPUExecutionProvider'])
    outputs['onnx'] = session.run(list(OUTPUT_NAMES), dict(zip(INPUT_NAMES, args)))
  return {name: max(float(np.abs(np.asarray(g) - e).max()) for g, e in zip(got, expected))
          for name, got in outputs.items()}


def export_main(workdir: str | None, out: str, formats: Sequence[str] = FORMATS,
                overwrite: bool = False, log: Callable[[str], None] = print,
                model: str | None = None) -> dict[str, Any]:
  """The command without absl: writes the folder, returns its model.json. The
  model is the shipped ``model`` or ``workdir``'s (exactly one)."""
  resolve.check_one_named(model, workdir)
  formats = [f.strip().lower() for f in formats if f.strip()]
  unknown = sorted(set(formats) - set(FORMATS))
  if unknown or not formats:
    raise UserError(f'--formats {",".join(formats)!r}: choose from {", ".join(FORMATS)}')
  if 'onnx' in formats and jax2onnx is None:
    raise UserError(f'ONNX export needs jax2onnx: {JAX2ONNX_INSTALL} (or --formats=stablehlo)')
  check_target(out, overwrite)
  loaded = InferenceModel.load(model, workdir, batch_size=1)
  data = contract(loaded, formats)
  if loaded.name:
    data['source'] = store.read_description(loaded.name)['source']
  out = os.path.abspath(out)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  staging = f'{out}.partial-{os.getpid()}'
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  try:
    if 'stablehlo' in formats:
      _write(staging, STABLEHLO_FILE, to_stablehlo(loaded), log)
    if 'onnx' in formats:
      _write(staging, ONNX_FILE, to_onnx(loaded, data), log)
    data['check'] = {'max_abs_difference_from_jax': verify(loaded, staging, formats),
                     'inputs': 'random batch of 3'}
    worst = max(data['check']['max_abs_difference_from_jax'].values(), default=0.0)
    if not worst <= 1e-4:
      raise UserError(f'the exported files differ from JAX by up to {worst:.3g}: not written')
    storage.write_json(os.path.join(staging, CONTRACT_FILE), data)
    storage.write_text(os.path.join(staging, README_FILE), readme(data))
    if loaded.name:  # the reference's weights: their license travels with them
      shutil.copyfile(store.license_path(), os.path.join(staging, LICENSE_FILE))
    _move_into_place(staging, out)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  checked = data['check']['max_abs_difference_from_jax']
  for name in formats:
    log(f'checked {name}: max |difference from JAX| = {checked[name]:.2g}' if name in checked
        else f'not checked {name}: onnxruntime is not installed (pip install -e \'.[export]\')')
  log(f'exported {model or os.path.basename(os.path.normpath(workdir))} to {out}')
  return data


def _write(folder: str, name: str, blob: bytes, log: Callable[[str], None]) -> None:
  with storage.atomic_write(os.path.join(folder, name), 'wb') as f:
    f.write(blob)
  log(f'wrote {name} ({len(blob) / 2**20:.2f} MiB)')


def _move_into_place(staging: str, out: str) -> None:
  """The finished folder replaces ``out`` (an earlier export) in one rename."""
  old = f'{out}.old-{os.getpid()}'
  if os.path.lexists(out):
    os.rename(out, old)
  os.rename(staging, out)
  shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- command line
def _define_flags() -> None:
  flags.DEFINE_string('model', None, f'A model shipped with crnn_jax: {", ".join(store.names())}. '
                      'Or give --workdir.')
  flags.DEFINE_string('workdir', None, 'A trained or imported model\'s workdir. Or give --model.')
  flags.DEFINE_string('out', None, 'A new folder for the exported files.')
  flags.DEFINE_list('formats', list(FORMATS), 'onnx (needs jax2onnx) and/or stablehlo.')
  flags.DEFINE_bool('overwrite', False, 'Replace an earlier export in --out.')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}: use --model or --workdir, and --out')
  f = flags.FLAGS
  export_main(f.workdir, f.out, f.formats, f.overwrite, model=f.model)


def run() -> None:
  _define_flags()
  run_command(main)


if __name__ == '__main__':
  run()
