"""The gRPC front end: ``inference.GRPCInferenceService`` on grpc.aio."""
