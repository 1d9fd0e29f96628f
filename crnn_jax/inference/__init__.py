"""Inference: a trained or imported workdir applied to audio.

  model.py      InferenceModel: a workdir's model, weights, class names, clip
                settings and multi-label threshold; uint8 images -> logits ->
                probabilities in fixed-size batches (one compilation)
  inputs.py     files and folders to score; tabular values from a CSV row or
                estimated from the audio
  predictor.py  Predictor: audio files -> windows -> per-file genre scores,
                decoding ahead in threads and packing windows of several files
                into each batch

The predict command (crnn_jax/predict.py) is a thin layer over these, and so
are the web page and the export.
"""
