"""The built-in demo trained in multi-label mode (sigmoid outputs, binary
cross-entropy), reporting mAP, ROC-AUC and example F1."""

import ml_collections

from configs import demo


def get_config() -> ml_collections.ConfigDict:
  config = demo.get_config()
  config.multilabel = True
  return config
