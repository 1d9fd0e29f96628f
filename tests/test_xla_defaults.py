"""The entry points set the fast CPU convolution flag before jax starts; forward
passes get their own fusion set."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
from conftest import ROOT

from crnn_jax.core import xla_defaults

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


def test_inference_programs_get_their_own_fusions_on_cpu_only(monkeypatch):
  monkeypatch.delenv('CRNN_JAX_KEEP_XLA_FLAGS', raising=False)
  monkeypatch.setenv('XLA_FLAGS', xla_defaults.EIGEN_CONVOLUTIONS)
  options = xla_defaults.inference_compiler_options('cpu')
  assert options == {xla_defaults.FUSION_FLAG: xla_defaults.INFERENCE_FUSIONS}
  assert xla_defaults.inference_compiler_options('gpu') is None
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=')  # the user's own
  assert xla_defaults.inference_compiler_options('cpu') is None
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.setenv('CRNN_JAX_KEEP_XLA_FLAGS', '1')
  assert xla_defaults.inference_compiler_options('cpu') is None
  # XLA accepts the option and computes the same function with it.
  x = jnp.linspace(-2.0, 2.0, 4 * 6 * 8).reshape(4, 6, 8)
  f = lambda x: jnp.maximum(x * 1.5 + 0.25, 0.0).reshape(4, 3, 2, 8).max(axis=2) @ x[0].T
  assert jnp.array_equal(jax.jit(f, compiler_options=options)(x), jax.jit(f)(x))
