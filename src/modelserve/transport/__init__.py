"""Front ends: REST (a plain ASGI app on uvicorn) and gRPC (grpc.aio). No business logic lives here."""
