"""Training and data preparation killed at random points: resumed == uninterrupted.

``python -m experiments.fault_injection`` runs the commands with kill points
that announce these phases before each of their moments:

  training  train_step (before each batch), checkpoint_save (orbax starts
            writing), checkpoint_manifest (orbax done, manifest not yet),
            evaluation (a split is predicted: validation each epoch, then
            validation and test), file_write (results.json, plots, metrics,
            config: anything written through crnn_jax.core.storage)
  build     decode (a track is decoded, not read from the cache), cache_write (its spectrogram is
            cached), dataset_write (an example goes into the TFDS files),
            report_write (the bad-input report)
"""

TRAINING_PHASES = ('train_step', 'checkpoint_save', 'checkpoint_manifest', 'evaluation',
                   'file_write')
BUILD_PHASES = ('decode', 'cache_write', 'dataset_write', 'report_write')
