"""The JSON API: Deep Dive's own /api routes, the OpenAI-compatible /v1 routes and their schemas, and the API's documentation page."""
