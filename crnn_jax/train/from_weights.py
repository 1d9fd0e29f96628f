"""A workdir made from finished weights (e.g. an imported reference model).

The checkpoint is a full train state at step 0 with a fresh optimiser, so
evaluation, prediction and fine-tuning use the ordinary code paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

from crnn_jax.data.info import DataInfo
from crnn_jax.train import state as state_lib
from crnn_jax.workdir import checkpoints, files
from crnn_jax.workdir.run_lock import holds_workdir


@holds_workdir('an import of finished weights')
def write_workdir(workdir: str, config: ml_collections.ConfigDict, variables: Mapping[str, Any],
                  data_info: Mapping[str, Any]) -> None:
  """Writes config.json, data_info.json and a step-0 checkpoint of ``variables``
  ({'params', 'batch_stats'}), which must fit the config's model."""
  workdir = files.ensure_workdir(workdir)
  info = DataInfo.from_json(data_info)
  checkpoints.check_shapes(state_lib.abstract_variables(config, info), variables,
                           'the imported checkpoint')
  state = state_lib.state_from_variables(config, info, variables,
                                         state_lib.make_optimizer(config, 1))
  files.save_config(workdir, config)
  files.save_data_info(workdir, info.to_json())
  mgr = checkpoints.manager(workdir)
  try:
    progress = checkpoints.Progress(epoch=config.train.num_epochs, imported=True)
    checkpoints.save(mgr, 0, state, progress.to_meta())
  finally:
    mgr.close()
