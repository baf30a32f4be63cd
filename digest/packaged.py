"""The files shipped inside the package (templates, the seed listing, the demo subscribers, the default
topics, the recorded days for offline replay and their config), found through importlib.resources so
that a built wheel runs from any folder.

The SPEC's default config names the seed listing and the demo subscribers by relative paths
(``seeds/hf_papers_search.txt``, ``config/demo_subscribers.csv``), and the README's "try it on real
days" names ``config/replay.toml``, whose sources read ``file:examples/replay/<source>/``. Relative
paths are read from the working directory first, as every other path in the config is; where no such
file or folder exists, those names mean the copies shipped in the package, so the embedded demo and the
replay work outside a checkout too (and a file of your own at that path wins).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

__all__ = ["DEMO_SUBSCRIBERS", "REPLAY_CONFIG", "REPLAY_DAYS", "SEED_LISTING", "locate", "locate_path", "packaged",
           "templates_dir"]

SEED_LISTING = "seeds/hf_papers_search.txt"
DEMO_SUBSCRIBERS = "config/demo_subscribers.csv"
REPLAY_CONFIG = "config/replay.toml"
REPLAY_DAYS = "examples/replay"

# The config names above -> where the package keeps them (a folder's name stands for everything in it).
_SHIPPED = {
    SEED_LISTING: "defaults/hf_papers_search.txt",
    DEMO_SUBSCRIBERS: "defaults/demo_subscribers.csv",
    REPLAY_CONFIG: "defaults/replay.toml",
    REPLAY_DAYS: "defaults/replay",
}


def packaged(name: str) -> Traversable:
    """A file or folder inside the ``digest`` package (``"templates"``, ``"defaults/topics.toml"``)."""
    return resources.files("digest").joinpath(name)


def templates_dir() -> Path:
    """The shipped templates folder as a filesystem path (Jinja's FileSystemLoader and the renderer's
    pickling need one; pip always installs a wheel as plain files)."""
    return Path(str(packaged("templates")))


def locate(configured: str | Path) -> Path | Traversable:
    """The file or folder a config path names: the path itself when it exists (relative to the working
    directory), else the shipped copy when it names one of the shipped files or something in a shipped
    folder, else the path itself (so the caller's "not found" message names what the config says)."""
    path = Path(configured)
    if path.exists() or path.is_absolute():
        return path
    key = PurePosixPath(*path.parts).as_posix()
    for name, shipped in _SHIPPED.items():
        if key == name or key.startswith(name + "/"):
            found = packaged(shipped + key.removeprefix(name))
            if found.is_file() or found.is_dir():
                return found
    return path


def locate_path(configured: str | Path) -> Path:
    """``locate`` as a filesystem path, for callers that list folders or need ``stat`` (pip always
    installs a wheel as plain files)."""
    found = locate(configured)
    return found if isinstance(found, Path) else Path(str(found))
