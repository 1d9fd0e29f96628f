"""A workdir: everything a run leaves behind, and reading it back.

  config.json       the run's full config (what built the model)
  data_info.json    class names, tabular encoding and clip settings, so that
                    evaluation and prediction work without the data set
  results.json      the last evaluation (written by crnn_jax.evaluate)
  checkpoints/N/    orbax: 'state' (params, batch stats, optimiser, step) and
                    'meta' (epoch, position within the epoch, history), plus
                    crnn_jax_manifest.json (each file's size and SHA-256)
  checkpoints_damaged/N-TIME/   a checkpoint found damaged, moved aside, with
                    DAMAGED.txt saying which file and what failed
  run.lock          while a run writes the workdir: who (host, pid, since)

None of its modules (docs/architecture.md) knows how a train state is built:
callers pass one.
"""
