"""The web UI at ``/ui``, served by the API process from this package alone.

Server-rendered pages (Jinja2, ``templates/``) made live with htmx, vendored and pinned in
``static/`` (its SHA-256 checked by the tests); no build step, no request to any other host.

- :mod:`~genspool.api.ui.app`: the UI app mounted at ``/ui``, its error pages, and the
  security headers of every answer under ``/ui``;
- :mod:`~genspool.api.ui.session`: login cookie, CSRF tokens, the scope each view needs;
- :mod:`~genspool.api.ui.pages`: rendering and the templates' filters;
- :mod:`~genspool.api.ui.live`: one Server-Sent Events stream per page that keeps it current
  (rows, a job's page and its tokens, the board, the playground's answers);
- one module per view group: :mod:`~genspool.api.ui.login`, :mod:`~genspool.api.ui.overview`,
  :mod:`~genspool.api.ui.jobs`, :mod:`~genspool.api.ui.dead_letters`,
  :mod:`~genspool.api.ui.fanouts`, :mod:`~genspool.api.ui.batches`,
  :mod:`~genspool.api.ui.pipelines`, :mod:`~genspool.api.ui.stores`,
  :mod:`~genspool.api.ui.prompts`, :mod:`~genspool.api.ui.drift` (the last six share
  :mod:`~genspool.api.ui.common`), :mod:`~genspool.api.ui.playground`. A new group is a
  module with a ``router``, listed in ``app.VIEWS`` and, for the navigation bar, ``pages.NAV``.
"""

from __future__ import annotations

from genspool.api.ui.app import mount_ui

__all__ = ["mount_ui"]
