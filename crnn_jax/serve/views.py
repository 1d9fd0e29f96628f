"""A scored file as the page shows it: one JSON object per upload.

Everything comes from ``Predictor.iter_predict(details=True)``, the code path
of the command line: the same probabilities, windows and embeddings.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping
from typing import Any

import matplotlib.image
import numpy as np

from crnn_jax.inference.embeddings import Embeddings
from crnn_jax.inference.model import InferenceModel

# Wider spectrograms (many windows) are thinned to this many columns for the page.
MAX_IMAGE_COLUMNS = 2400


def spectrogram_png(images: np.ndarray) -> str:
  """The windows' uint8 images side by side, as the model sees them, as a PNG data URL."""
  strip = np.concatenate(list(images), axis=1)
  if strip.shape[1] > MAX_IMAGE_COLUMNS:
    strip = strip[:, np.linspace(0, strip.shape[1] - 1, MAX_IMAGE_COLUMNS).astype(int)]
  sink = io.BytesIO()
  matplotlib.image.imsave(sink, strip, cmap='gray', vmin=0, vmax=255, format='png')
  return 'data:image/png;base64,' + base64.b64encode(sink.getvalue()).decode('ascii')


def file_view(result: Mapping[str, Any], name: str, model: InferenceModel) -> dict[str, Any]:
  """The page's JSON for one scored file (``result`` from iter_predict with details)."""
  details = result['details']
  result = {**result, 'file': name}
  embeddings = Embeddings.from_results([result], model)
  view = {
      'file': name,
      'windows': result['windows'],
      'audio': details.audio_info,
      'top_k': result['top_k'],
      'probabilities': result['probabilities'],
      'timeline': {'starts': [float(s) for s in details.starts],
                   'window_seconds': model.clip.seconds,
                   'probabilities': np.round(details.probabilities, 6).tolist()},
      'spectrogram': spectrogram_png(details.images),
      'embeddings': {
          'filename': f'{os.path.splitext(name)[0]}.embeddings.npz',
          'shape': list(np.shape(details.embeddings)),
          'description': embeddings.description,
          'npz_base64': base64.b64encode(embeddings.npz_bytes()).decode('ascii'),
      },
  }
  for key in ('threshold', 'above_threshold', 'tabular'):
    if key in result:
      view[key] = result[key]
  return view
