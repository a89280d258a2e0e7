"""The REST gateway: the TuneScout API (FastAPI) in front of the gRPC services. Thin: no audio work here."""
