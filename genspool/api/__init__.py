"""The HTTP API: the app factory, its routes (jobs, push, OpenAI-compatible, keys, operations),
authorization, admission and request validation."""
