"""The recognition engine, pure logic (no grpc, no fastapi).

Stages: decode -> spectrogram -> peaks -> pairs -> hashes -> store -> score.
"""
