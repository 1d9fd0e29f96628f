"""The user's documentation: a short front page that guides, and links that lead somewhere.

A newcomer reads README.md first: it stays a front page (a table of contents, at most
250 lines) and the details live in docs/. Users have only the repository, so no page
may send them to the developers' ../shared folder, and every relative link (a file, or
a heading of one) must resolve.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / 'README.md', ROOT / 'data_prep' / 'README.md',
                *(ROOT / 'docs').glob('*.md'), *(ROOT / 'experiments').glob('**/README.md')])
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def github_anchor(heading: str) -> str:
  """The fragment GitHub gives a Markdown heading: lower case, punctuation dropped,
  spaces as hyphens."""
  text = re.sub(r'[`*_]', '', heading.strip().lower())
  text = re.sub(r'[^\w\- ]', '', text)
  return text.replace(' ', '-')


def anchors(page: Path) -> set[str]:
  headings, fenced = [], False
  for line in page.read_text().splitlines():
    if line.startswith('```'):
      fenced = not fenced
    elif not fenced and line.startswith('#'):
      headings.append(line.lstrip('#'))
  return {github_anchor(h) for h in headings}


def test_the_front_page_is_short_and_has_a_table_of_contents():
  lines = (ROOT / 'README.md').read_text().splitlines()
  assert len(lines) <= 250, f'README.md has {len(lines)} lines: move details to docs/'
  assert '## Contents' in lines
  toc = [LINK.findall(line) for line in lines if line.startswith('- [')]
  headings = anchors(ROOT / 'README.md')
  assert len(toc) >= 5 and all(t and t[0].lstrip('#') in headings for t in toc)


def test_the_quick_start_is_two_commands():
  text = (ROOT / 'README.md').read_text()
  block = text.split('## Quick start', 1)[1].split('```bash', 1)[1].split('```', 1)[0]
  commands = [line for line in block.splitlines() if line.strip()]
  assert len(commands) == 2
  assert 'main.py --config=configs/demo.py' in commands[0]
  assert 'pytest' in commands[1]


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_points_at_the_developers_shared_folder(page):
  assert '../shared' not in page.read_text()


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
  broken = []
  for target in LINK.findall(page.read_text()):
    if re.match(r'[a-z]+:', target):
      continue  # http(s), mailto: not checked offline
    path, _, fragment = target.partition('#')
    linked = (page.parent / path).resolve() if path else page
    if not linked.exists() or (fragment and linked.suffix == '.md'
                               and fragment not in anchors(linked)):
      broken.append(target)
  assert not broken, f'{page.relative_to(ROOT)}: links to nothing: {broken}'
