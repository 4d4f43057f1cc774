import pytest

from ffhq_aging_assets.lib.drive import (
    DrivePageError,
    DriveQuotaError,
    drive_file_id,
    interpret_html,
    looks_like_html,
)
from ffhq_aging_assets_tests.fake_drive import LEGACY_PAGE, QUOTA_PAGE, VIRUS_SCAN_PAGE


def test_interpret_pages() -> None:
    page = VIRUS_SCAN_PAGE.format(
        id="abcdefghij12",
        name="f",
        size_h="1K",
        base="https://drive.usercontent.google.com",
        uuid="u-1",
    )
    nxt = interpret_html(page, "https://drive.google.com/uc?id=abcdefghij12")
    assert nxt.url == "https://drive.usercontent.google.com/download"
    assert nxt.params == {"id": "abcdefghij12", "export": "download", "confirm": "t", "uuid": "u-1"}
    legacy = interpret_html(
        LEGACY_PAGE.format(id="abcdefghij12", token="T0k"),
        "https://drive.google.com/uc?id=abcdefghij12",
    )
    assert legacy.url == "https://drive.google.com/uc?export=download&confirm=T0k&id=abcdefghij12"
    with pytest.raises(DriveQuotaError):
        interpret_html(QUOTA_PAGE, "https://drive.google.com/uc")
    with pytest.raises(DrivePageError, match="Sign in"):
        interpret_html("<html><title>Sign in</title></html>", "https://x/")
    assert looks_like_html(b"\n  <!DOCTYPE html><html>") and not looks_like_html(b"\x89PNG\r\n")
    assert drive_file_id("https://drive.google.com/uc?id=16N0RV4fHI6joBuKbQAoG34V_cQk7vxSA")
    assert drive_file_id("https://drive.google.com/file/d/1SHafCugkpMZzYhbgOz0zCuYiy-hb9lYX/view")
    assert drive_file_id("https://example.com/x.png") is None
