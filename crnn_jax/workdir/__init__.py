"""A workdir: everything a run leaves behind, and reading it back.

  config.json       the run's full config (what built the model)
  data_info.json    class names, tabular encoding and clip settings, so that
                    evaluation and prediction work without the data set
  results.json      the last evaluation (written by crnn_jax.evaluate)
  checkpoints/N/    orbax: 'state' (params, batch stats, optimiser, step) and
                    'meta' (epoch, position within the epoch, history)

``files.py`` reads and writes the JSON files, ``checkpoints.py`` the orbax
checkpoints. Neither knows how a train state is built: callers pass one.
"""
