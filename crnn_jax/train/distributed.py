"""Multi-process start-up through JAX's own distributed runtime.

A run is multi-process when the coordinator flags say so, or when a cluster
JAX recognises (SLURM, Open MPI) started several tasks; a plain single-process
run initialises nothing. On CPU the processes reduce through gloo.
"""

from __future__ import annotations

import importlib.util
import os

import jax

from crnn_jax.core.errors import UserError

CLUSTER_ENV = {'SLURM_NTASKS': 'SLURM', 'OMPI_COMM_WORLD_SIZE': 'Open MPI'}


def detected_cluster() -> str | None:
  """The cluster that launched several tasks of this job, if any."""
  for var, name in CLUSTER_ENV.items():
    if int(os.environ.get(var, '1') or 1) > 1:
      return name
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Calls ``jax.distributed.initialize`` when the run is multi-process.

  Explicit arguments win; otherwise JAX reads SLURM / Open MPI's environment.
  Returns whether the distributed runtime was started.
  """
  given = [coordinator_address is not None, num_processes is not None, process_id is not None]
  if any(given) and not all(given):
    raise UserError('multi-process runs need all of --coordinator_address, --num_processes and '
                    '--process_id (or none of them, to run alone or under SLURM / Open MPI)')
  explicit = all(given) and num_processes > 1
  if not explicit and detected_cluster() is None:
    return False
  if _cpu_only():
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if explicit:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()
  return True


def _cpu_only() -> bool:
  """Decided without starting a backend: initialize() must come first."""
  platforms = os.environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.split(',')[0] == 'cpu'
  return not any(importlib.util.find_spec(m) is not None
                 for m in ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin'))
