"""Training: the optimiser and train state, the update and evaluation steps,
the device mesh, the loop, and the learning-rate range test.

  state.py       TrainState, the one-cycle AdamW, a fresh or abstract state
  steps.py       train_step / eval_step (pure; jitted by parallel.py)
  parallel.py    the Mesh: batch on 'data', state replicated
  setup.py       one way to build a run (workdir, data, mesh, label hierarchy)
  trainer.py     train_and_evaluate (the whole loop, top to bottom) and evaluate_only
  stopping.py    Ctrl-C / SIGTERM at a step boundary; the NaN guard's error
  writers.py     progress lines, TensorBoard and metrics.jsonl
  lr_find.py     fastai's learning-rate range test
  from_weights.py a workdir made from finished weights (reference import)
  distributed.py multi-process start-up
"""
