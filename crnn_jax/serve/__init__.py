"""``python -m crnn_jax.serve``: a local web page over a workdir's model.

  __main__.py   flags, the model, uvicorn on 127.0.0.1
  app.py        the FastAPI app: the page, /api/model, /api/predict (an audio
                file as the request body, streamed into a temporary folder
                with a size limit, scored off the event loop)
  views.py      a scored file -> what the page shows (top genres, the
                model's spectrogram as a PNG, genre per window, the
                embeddings as the .npz the command line writes)
  static/       the page: HTML, CSS and JavaScript, nothing fetched from
                elsewhere
"""
