"""The Open Inference Protocol (KServe V2) with Triton's extensions, as wire formats only: the REST JSON and
binary-tensor codecs, the gRPC message codecs, request parameters and the response documents. What the
server does with a decoded request is the dataplane's (``service/``)."""
