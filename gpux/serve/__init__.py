"""``gpux serve``: the HTTP server (Open Inference Protocol v2, predict API, metrics)."""
