"""python -m experiments.fault_injection [--trials=3] [--kills=4] [--seed=0] ..."""

from experiments.fault_injection import harness

if __name__ == '__main__':
  harness.main()
