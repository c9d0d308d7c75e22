"""Test helpers shipped with genspool; nothing here is used by the service itself."""
