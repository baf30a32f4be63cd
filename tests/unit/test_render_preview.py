"""Preview files for `digest preview --format html|text|eml [--out F] [--open]`."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.errors import UsageError
from digest.preview import open_preview, write_preview


def test_writes_each_format_where_asked(tmp_path: Path) -> None:
    assert write_preview("<p>é</p>", "html", tmp_path / "a" / "x.html").read_text(encoding="utf-8") == "<p>é</p>"
    assert write_preview(b"From: a@b\r\n\r\nx", "eml", tmp_path / "x.eml").read_bytes() == b"From: a@b\r\n\r\nx"


def test_without_out_a_temporary_file_with_the_right_suffix(tmp_path: Path) -> None:
    path = write_preview("hello", "text")
    try:
        assert path.suffix == ".txt" and path.read_text(encoding="utf-8") == "hello"
    finally:
        path.unlink()


def test_open_hands_a_file_uri_to_the_browser(tmp_path: Path) -> None:
    path = write_preview("<p>x</p>", "html", tmp_path / "x.html")
    opened: list[str] = []
    assert open_preview(path, opener=lambda uri: opened.append(uri) or True)
    assert opened == [path.resolve().as_uri()]
    assert not open_preview(path, opener=lambda uri: False)


def test_bad_format_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        write_preview("x", "pdf")  # type: ignore[arg-type]
