"""Aligned images on disk: what counts as valid, the per-image worker, and a preview.

:func:`align_file` is what each alignment process runs for one image; the pipeline that feeds
it a chunk's downloads is :mod:`ffhq_aging_assets.lib.align_pipeline`.
"""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import numpy as np
import PIL.Image

from ffhq_aging_assets.lib.align import Mode, align_face
from ffhq_aging_assets.lib.files import atomic_path

# A 70,000-image dataset has some enormous photos; PIL's bomb guard is for untrusted web input,
# and these files are verified by md5 against the published metadata before they are decoded.
PIL.Image.MAX_IMAGE_PIXELS = 200_000_000


class ImageError(RuntimeError):
    """One image could not be produced; the message names it."""


def is_valid_image(path: Path, resolution: int, mode: str = "RGB") -> bool:
    """True when ``path`` decodes completely as a ``resolution`` x ``resolution`` image."""
    try:
        with PIL.Image.open(path) as img:
            if img.size != (resolution, resolution) or img.mode != mode:
                return False
            img.load()
        return True
    except (OSError, ValueError, SyntaxError):
        return False


def pixel_md5(img: PIL.Image.Image) -> str:
    """md5 of ``np.array(img)``'s bytes, as FFHQ's metadata records it."""
    return hashlib.md5(np.array(img).tobytes(), usedforsecurity=False).hexdigest()


def align_file(
    src: Path,
    landmarks: np.ndarray,
    resolution: int,
    mode: Mode,
    dest: Path,
    expected_pixel_md5: str | None = None,
) -> int:
    """Decode ``src``, check its pixels if asked, align it and write ``dest`` atomically.

    Returns the bytes written. Runs in a worker process.

    Raises:
        ImageError: naming the image, for undecodable input, a pixel md5 mismatch or a
            degenerate face.
    """
    name = dest.name
    try:
        with PIL.Image.open(src) as img:
            img.load()
            if expected_pixel_md5 is not None:
                got = pixel_md5(img)
                if got != expected_pixel_md5:
                    raise ImageError(
                        f"{name}: pixel md5 {got} differs from the metadata's {expected_pixel_md5}"
                    )
            out = align_face(img, landmarks, resolution, mode=mode)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: {type(exc).__name__}: {exc}") from None
    with atomic_path(dest) as tmp:
        out.save(tmp, format="PNG")
    return dest.stat().st_size


def contact_sheet(
    paths: list[Path], *, columns: int = 8, thumb: int = 64, max_bytes: int = 200_000
) -> str:
    """A JPEG grid of thumbnails as a Markdown image (data URL), at most ``max_bytes``."""
    paths = paths[: columns * 4]
    if not paths:
        return "(no images)"
    rows = -(-len(paths) // columns)
    sheet = PIL.Image.new("RGB", (columns * thumb, rows * thumb), (255, 255, 255))
    for i, path in enumerate(paths):
        with PIL.Image.open(path) as img:
            sheet.paste(
                img.convert("RGB").resize((thumb, thumb)),
                (i % columns * thumb, i // columns * thumb),
            )
    for quality in (85, 70, 50, 30):
        buf = io.BytesIO()
        sheet.save(buf, format="JPEG", quality=quality)
        if buf.tell() * 4 / 3 < max_bytes:
            break
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f"![contact sheet](data:image/jpeg;base64,{data})"
