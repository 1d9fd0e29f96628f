"""Recipes: what main.py runs for a config, above training and inference.

  run.py    ``train(config, workdir)``: the recipe config.recipe names (train the
            config as it is, the probe, a fine-tune of every layer or of the head)
  probe.py  the probe: logistic regression on a pretrained model's embeddings,
            folded into its classifier layer and saved as an ordinary workdir
"""
