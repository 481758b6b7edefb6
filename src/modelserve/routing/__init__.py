"""Which loaded model version serves a request (aliases, canaries and experiments come here later)."""
