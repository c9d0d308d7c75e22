"""Pipelines: items from a source through model calls and local steps to sinks, started by
HTTP, schedules, files and events (issue: batch processing, pattern 6 of the source articles).

:mod:`~genspool.pipelines.spec` reads them from a models file; :mod:`~.runner` drives runs in
the API processes; :mod:`~.triggers` starts them; :mod:`~.service` is what the routes call.
"""
