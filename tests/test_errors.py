"""The command-line wrapper every entry point uses: a UserError is one line on
stderr and exit status 2, never a traceback; otherwise main's return value is
the exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMAND = '''
import sys
from crnn_jax.core.errors import UserError, run_command

def main(argv):
  if argv[1] == 'fail':
    raise UserError('the data set  is missing:\\n  build it first')
  if argv[1] == 'abandoned':  # as a refused save leaves orbax's writes
    async def write():
      pass
    sys.modules[__name__].pending = write()
    raise UserError('no space left')
  if argv[1] == 'crash':
    raise RuntimeError('a bug')
  return int(argv[1])

run_command(main)
'''


def _command(arg: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-c', COMMAND, arg], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, check=False)


def test_a_user_error_is_one_line_and_status_2():
  out = _command('fail')
  assert out.returncode == 2
  assert out.stderr == 'error: the data set is missing: build it first\n'


def test_work_the_error_abandoned_adds_no_warning_after_the_line():
  out = _command('abandoned')
  assert out.returncode == 2 and out.stderr == 'error: no space left\n'


@pytest.mark.parametrize('status', [0, 3])
def test_main_returns_the_exit_status(status):
  out = _command(str(status))
  assert out.returncode == status and not out.stderr


def test_a_bug_keeps_its_traceback():
  out = _command('crash')
  assert out.returncode == 1 and 'Traceback' in out.stderr and 'RuntimeError: a bug' in out.stderr
