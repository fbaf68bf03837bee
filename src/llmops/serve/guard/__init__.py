"""Code that runs inside vLLM's API server (its folder is put on the server's PYTHONPATH):
standard library only, since it imports nothing of llmops."""
