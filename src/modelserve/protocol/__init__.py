"""The Open Inference Protocol (KServe V2) with Triton's extensions: codecs, validation, the API both
transports call."""
