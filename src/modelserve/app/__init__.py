"""Composition: the engine (every part wired together, no sockets) and the server (the engine plus listeners)."""
