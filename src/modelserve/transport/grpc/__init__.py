"""The gRPC front end: ``inference.GRPCInferenceService`` on grpcio's synchronous server (``servicer.py`` says why)."""
