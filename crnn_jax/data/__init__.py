"""Data sets: their schema, their description, and the input pipeline.

  schema.py    the TFDS features every prepared data set has (the contract
               between data_prep, which writes, and training, which reads)
  info.py      DataInfo: what a model needs to know of its data set; kept in a
               workdir so evaluation and prediction work without the data
  source.py    opening a prepared data set and checking it against a config
  pipeline.py  grain batches for training (seeded order, exact resume) and
               evaluation (every example once, padded)
"""
