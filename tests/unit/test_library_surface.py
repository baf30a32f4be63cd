"""digest/__init__.py's library surface, kept honest (as httpx's test_exported_members does): the exact
list of names, each importable, documented and defined in the package, and ``import digest`` cheap."""

from __future__ import annotations

import subprocess
import sys

import digest

SURFACE = sorted([
    "__version__",
    "load_settings", "Settings",
    "Store",
    "Pipeline",
    "build_sources",
    "Tagger",
    "select", "SelectionContext",
    "Composer", "Renderer", "ReferenceRenderer",
    "build_mailer",
    "SigningKey",
    "Paper", "Subscriber", "Issue", "OutgoingMessage",
    "DigestError",
])


def test_the_surface_is_exactly_this() -> None:
    assert digest.__all__ == SURFACE
    assert set(SURFACE) <= set(dir(digest))
    assert sorted(["__version__", *digest._SURFACE]) == SURFACE  # every name says where it lives


def test_every_name_imports_and_is_documented() -> None:
    for name in SURFACE:
        if name == "__version__":
            continue
        value = getattr(digest, name)
        assert value.__module__.startswith("digest."), name
        assert (value.__doc__ or "").strip(), f"{name} has no docstring"
    assert isinstance(digest.__version__, str)
    namespace: dict[str, object] = {}
    exec("from digest import *", namespace)
    assert set(SURFACE) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        digest.nothing_here  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as err:
        assert "nothing_here" in str(err)
    else:
        raise AssertionError("digest.nothing_here should not exist")


def test_importing_digest_loads_no_stage() -> None:
    code = "import sys, digest; print(sorted(m for m in ('sqlalchemy', 'jinja2', 'httpx') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr
