"""The files shipped inside the package (templates, the seed listing, the demo subscribers, the default
topics), found through importlib.resources so that a built wheel runs from any folder.

The SPEC's default config names the seed listing and the demo subscribers by relative paths
(``seeds/hf_papers_search.txt``, ``config/demo_subscribers.csv``). Relative paths in the config are
read from the working directory first, as every other path in it is; where no such file exists, those
two names mean the copies shipped in the package, so the embedded demo works outside a checkout too.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

__all__ = ["DEMO_SUBSCRIBERS", "SEED_LISTING", "locate", "packaged", "templates_dir"]

SEED_LISTING = "seeds/hf_papers_search.txt"
DEMO_SUBSCRIBERS = "config/demo_subscribers.csv"

# The config names above -> where the package keeps them.
_SHIPPED = {
    SEED_LISTING: "defaults/hf_papers_search.txt",
    DEMO_SUBSCRIBERS: "defaults/demo_subscribers.csv",
}


def packaged(name: str) -> Traversable:
    """A file or folder inside the ``digest`` package (``"templates"``, ``"defaults/topics.toml"``)."""
    return resources.files("digest").joinpath(name)


def templates_dir() -> Path:
    """The shipped templates folder as a filesystem path (Jinja's FileSystemLoader and the renderer's
    pickling need one; pip always installs a wheel as plain files)."""
    return Path(str(packaged("templates")))


def locate(configured: str) -> Path | Traversable:
    """The file a config path names: the path itself when it exists (relative to the working
    directory), else the shipped copy when it names one of the shipped files, else the path itself
    (so the caller's "not found" message names what the config says)."""
    path = Path(configured)
    if path.exists():
        return path
    key = PurePosixPath(*path.parts).as_posix() if not path.is_absolute() else ""
    shipped = _SHIPPED.get(key.removeprefix("./"))
    if shipped is not None:
        found = packaged(shipped)
        if found.is_file():
            return found
    return path
