"""The schema revision the migration files lead to, read without loading alembic or SQLAlchemy (the
Store compares a database's revision with it on every start; the quick reader before every read)."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

__all__ = ["schema_head"]


@lru_cache(maxsize=1)
def schema_head() -> str | None:
    """The newest migration's revision, read from the migration files' ``revision`` and
    ``down_revision`` lines (cheap; a test checks it against alembic's own head). None if the files
    do not form one chain with one head: alembic then decides."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (resources.files("digest.store") / "migrations" / "versions").iterdir():
        if not script.name.endswith(".py") or script.name.startswith("_"):
            continue
        text = script.read_text(encoding="utf-8")
        revision = _REVISION.search(text)
        if revision is None:
            return None
        revisions.add(revision[1])
        down = _DOWN_REVISION.search(text)
        parents.update(_PARENTS.findall(down[0]) if down else ())
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


_REVISION = re.compile(r'^revision\s*(?::\s*str\s*)?=\s*["\']([^"\']+)["\']', re.MULTILINE)

_DOWN_REVISION = re.compile(r"^down_revision\b.*$", re.MULTILINE)

_PARENTS = re.compile(r'["\']([^"\']+)["\']')
