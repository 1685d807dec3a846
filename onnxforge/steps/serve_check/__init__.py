"""`onnxforge serve-check`: check.py (a real MLServer, served parity over REST and gRPC,
malformed requests, bounded load), options.py, step.py."""
