"""Decoding: sampling settings and the seeded draw, one stream's generation, and continuous batching of many."""
