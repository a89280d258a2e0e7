"""The four services: one folder each, with its settings, servicer and server entry point (`python -m`)."""
