"""Recipes: what main.py runs for a config, above training and inference.

  run.py     ``train(config, workdir)``: the recipe config.recipe names; the
             clips a folder is prepared with; the summary a run ends with
  choose.py  the automatic recipe: candidates scored by cross-validation on
             the training split, the winner retrained on all of it
  recipe.py  one recipe to a workdir: the config as it is, the probe, a
             fine-tune of every layer or of the head
  probe.py   the probe: logistic regression on a pretrained model's embeddings,
             folded into its classifier layer and saved as an ordinary workdir
"""
