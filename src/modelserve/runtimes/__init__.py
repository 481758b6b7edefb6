"""Model backends behind the :class:`~modelserve.runtimes.base.Runtime` protocol."""
