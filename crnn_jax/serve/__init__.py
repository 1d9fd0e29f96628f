"""``python -m crnn_jax.serve``: a local web page over a workdir's model (the
page, nothing fetched from elsewhere; a FastAPI app scoring uploads off the event
loop; answering only its own names and, on /api/, this run's token).
docs/architecture.md lists the modules."""
