"""The MLX worker: Celery app, model provider, constrained decoding and the analyze task."""
