"""``python -m crnn_jax.serve``: a local web page over a workdir's model (the
page, nothing fetched from elsewhere; a FastAPI app scoring uploads off the event
loop). docs/architecture.md lists the modules."""
