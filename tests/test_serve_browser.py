"""The web page in a real browser (slow): headless Debian chromium via Selenium.

Trains the README's demo model, starts ``python -m crnn_jax.serve`` on it,
uploads a demo clip and a 30-s clip that turns from swing into metal through
the page's file input, waits for the cards, checks that each shows the top
genre the command line prints for the same file, and saves the screenshot the
README shows (docs/web_page.png). .ci/run installs chromium and chromium-driver.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import ROOT
from serve_command import serve_command

from data_prep import demo

webdriver = pytest.importorskip('selenium.webdriver')
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

SCREENSHOT = Path(ROOT) / 'docs' / 'web_page.png'


def _demo_workdir(tmp_path) -> str:
  workdir = tmp_path / 'demo'
  subprocess.run([sys.executable, 'main.py', '--config=configs/demo.py', f'--workdir={workdir}',
                  f'--config.data.data_dir={tmp_path}/tfds',
                  f'--config.data.demo_audio_dir={tmp_path}/audio'],
                 cwd=ROOT, check=True, capture_output=True, timeout=900)
  return str(workdir)


def _swing_then_metal(path) -> str:
  """30 s: 15 s of swing, then 15 s of metal (the timeline shows the change)."""
  parts = [demo.synthesize(style, seed=11, index=0, seconds=15.0) for style in ('swing', 'metal')]
  sf.write(str(path), np.concatenate(parts), 22_050)
  return str(path)


def _cli_top_genres(workdir: str, files: list[str]) -> dict[str, str]:
  proc = subprocess.run([sys.executable, '-m', 'crnn_jax.predict', f'--workdir={workdir}',
                         '--format=json', *files], cwd=ROOT, capture_output=True, text=True,
                        timeout=300, check=True)
  return {r['file']: r['top_k'][0]['genre'] for r in json.loads(proc.stdout)['results']}


def _browser() -> webdriver.Chrome:
  options = webdriver.ChromeOptions()
  options.binary_location = shutil.which('chromium')
  for argument in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                   '--disable-background-networking', '--disable-component-update',
                   '--disable-sync', '--no-first-run', '--window-size=1200,900',
                   f'--user-data-dir={tempfile.mkdtemp(prefix="chromium_")}'):
    options.add_argument(argument)
  return webdriver.Chrome(options=options, service=Service(shutil.which('chromedriver')))


@pytest.mark.slow
def test_page_shows_the_command_lines_top_genre(tmp_path):
  if not (shutil.which('chromium') and shutil.which('chromedriver')):
    pytest.skip('needs Debian chromium and chromium-driver (.ci/run installs them)')

  workdir = _demo_workdir(tmp_path)
  clip = min((tmp_path / 'audio' / 'swing').iterdir())
  files = [_swing_then_metal(tmp_path / 'swing_then_metal.wav'), str(clip)]
  expected = _cli_top_genres(workdir, files)
  with serve_command(f'--workdir={workdir}') as served, _browser() as driver:
    driver.get(served.url)
    WebDriverWait(driver, 60).until(
        lambda d: 'genres' in d.find_element(By.ID, 'model').text)
    driver.find_element(By.ID, 'files').send_keys('\n'.join(files))
    WebDriverWait(driver, 300).until(lambda d: all(
        card.get_attribute('data-top-genre') or 'failed' in card.get_attribute('class')
        for card in d.find_elements(By.CSS_SELECTOR, 'article.card')) and len(
        d.find_elements(By.CSS_SELECTOR, 'article.card')) == len(files))
    for path in files:
      card = driver.find_element(By.CSS_SELECTOR, f'article.card[data-file="{path.split("/")[-1]}"]')
      shown = card.find_element(By.CSS_SELECTOR, '.top-genre').text
      assert shown == expected[path], (path, shown, expected)
    height = driver.execute_script('return document.documentElement.scrollHeight')
    driver.set_window_size(1200, int(height) + 150)  # the whole page, window chrome included
    SCREENSHOT.parent.mkdir(exist_ok=True)
    driver.save_screenshot(str(SCREENSHOT))
  assert expected[files[1]] == 'swing'  # the demo model knows its demo clip
