"""The dataplane: what the server does with a decoded request, whatever transport brought it."""
