"""The python runtime: a user's ``model.py`` run in worker processes (it holds the GIL)."""
