"""Front ends: REST (a plain ASGI app on uvicorn) and gRPC (grpcio's synchronous server, each call on a
pool thread). They decode, build the request context, call the dataplane and encode; no decisions live here."""
