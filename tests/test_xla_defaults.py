"""The entry points set the fast CPU convolution flag before jax starts."""

import os
import subprocess
import sys

from conftest import ROOT

PROBE = ('import os, sys; sys.argv = ["main.py"]; import main; import jax; '
         'jax.numpy.ones(1).block_until_ready(); print(os.environ.get("XLA_FLAGS", ""))')


def _flags(env_update):
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'CRNN_JAX_KEEP_XLA_FLAGS')}
  env.update(env_update)
  out = subprocess.run([sys.executable, '-c', PROBE], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120, check=True)
  return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ''


def test_main_adds_the_eigen_convolution_flag_and_keeps_user_flags():
  assert 'ynn_fusion_type=-individual_convolution' in _flags({})
  mixed = _flags({'XLA_FLAGS': '--xla_force_host_platform_device_count=2'})
  assert mixed.startswith('--xla_force_host_platform_device_count=2')
  assert 'individual_convolution' in mixed
  own = '--xla_cpu_experimental_ynn_fusion_type='  # YNNPACK for everything
  assert _flags({'XLA_FLAGS': own}) == own
  assert _flags({'CRNN_JAX_KEEP_XLA_FLAGS': '1'}) == ''


def test_too_late_once_jax_is_imported():
  code = ('import jax, sys; sys.path.insert(0, "."); from crnn_jax.core import xla_defaults; '
          'print(xla_defaults.apply())')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, check=True)
  assert out.stdout.strip() == 'False'
