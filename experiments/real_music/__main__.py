"""python -m experiments.real_music [--work=DIR] [--rows=...] [--folds=K] ... (study.py)"""

import sys

from experiments.real_music import study

if __name__ == '__main__':
  sys.exit(study.main())
