"""``soc-async view``: a static conversation viewer of a run directory.

    build.py    the run as small data scripts the page loads on demand (chunked)
    render.py   persona cards and experiences (markdown in XML) as HTML
    serve.py    --serve: the site on 127.0.0.1 (standard library)
    static/     index.html, app.js, app.css: the page itself, no network, no CDN

docs/view.md describes the page for users.
"""

from __future__ import annotations

from soc_async.view.build import SiteSummary, build_site
from soc_async.view.serve import serve

__all__ = ["SiteSummary", "build_site", "serve"]
