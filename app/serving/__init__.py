"""Serving models: the engine routes talk to, the thread every forward runs on, streams of events, the sources a page may choose, and the client for a model on a serving engine."""
