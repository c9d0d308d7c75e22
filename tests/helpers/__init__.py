"""Helpers of genspool's own test suite, imported by tests and fixtures (never through a
conftest): :mod:`tests.helpers.processes` for real processes on loopback,
:mod:`tests.helpers.api` for the API in process. Helpers useful beyond this suite (an app over
``memory://``, a fake clock) are public, in :mod:`genspool.testing.inprocess`."""
