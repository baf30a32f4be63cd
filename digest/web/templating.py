"""The Jinja2 environments of the web app: HTML and XML autoescaped, plain-text mail bodies not."""

from __future__ import annotations

from functools import lru_cache

import jinja2

from digest.packaged import templates_dir

# digest/templates/web/, beside the email templates: package data, so a wheel has them too.
WEB_TEMPLATES = templates_dir() / "web"
STATIC_DIR = WEB_TEMPLATES / "static"


@lru_cache(maxsize=1)
def html_env() -> jinja2.Environment:
    """Pages, the HTML mail body and the Atom feed: every value is escaped unless marked safe."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(WEB_TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@lru_cache(maxsize=1)
def text_env() -> jinja2.Environment:
    """Plain-text mail bodies: no HTML escaping (there is no HTML to break)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(WEB_TEMPLATES), autoescape=False,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)
