"""README's Layout section describes the tree as it is."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_block() -> str:
    """The indented block under README's ``## Layout`` heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("    "))


def test_every_path_in_the_layout_exists() -> None:
    block = layout_block()
    paths = re.findall(r"(?:^|\s|,)((?:ffhq_aging_assets\w*|deploy|benchmarks)/[\w./]*)", block)
    paths += re.findall(r"(?:^|\s|,)([\w-]+\.(?:yaml|toml|sh))(?=[\s,])", block)
    assert len(paths) > 10
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"README's Layout names paths that do not exist: {missing}"


def test_every_module_is_in_the_layout() -> None:
    block = layout_block()
    words = set(re.findall(r"[\w]+", block))
    package = ROOT / "ffhq_aging_assets"
    modules = [
        path
        for path in package.rglob("*.py")
        if path.stem not in ("__init__", "__main__") and "__pycache__" not in path.parts
    ]
    absent = sorted(str(p.relative_to(ROOT)) for p in modules if p.stem not in words)
    assert not absent, f"README's Layout does not mention: {absent}"
