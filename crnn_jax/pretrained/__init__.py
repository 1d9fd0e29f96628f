"""The reference's trained models, shipped with crnn_jax (README.md here: what
they are, where they come from, their license).

  store.py    the files: NAME.msgpack (weights) + NAME.json (config, data_info,
              source), read without torch or network; written by
              ``python -m crnn_jax.regenerate_pretrained``
  resolve.py  a model to use named by a shipped name (--model) or a workdir
              (--workdir; config.init_from takes either)
"""
