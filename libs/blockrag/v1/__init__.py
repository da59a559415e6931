"""Generated gRPC stubs of protos/blockrag/v1 (protos/generate.py); do not edit."""
