"""Studies run from the command line (``python -m experiments.NAME``), each with its
results and commands in its own README: they use the library and data_prep, and
nothing in either imports them."""
