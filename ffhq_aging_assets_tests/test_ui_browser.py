"""The researcher's path through the Dagster UI, in a real browser (Debian's chromium).

``dagster dev`` runs on a free loopback port against a private instance whose settings file
points every input at the fake Drive; the browser opens the lineage, materializes the shared
inputs and then chunk 00000 from the partition dialog, reads the masks' checks and preview, and
turns the nightly backfill on. Screenshots go to ``$FFHQ_UI_SCREENSHOTS`` (default: the test's
temporary folder).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from ffhq_aging_assets.cli import lineage_address
from ffhq_aging_assets_tests.dagster_dev import PROJECT, dagster_dev
from ffhq_aging_assets_tests.fixtures import serve_synthetic
from ffhq_aging_assets_tests.serve_fake_drive import settings_text

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STAGES = ("inputs", "metadata", "alignment", "images", "segmentation", "labels", "products")
# Headless, and nothing reaches beyond loopback: no updates, sync, metrics or safe browsing.
BROWSER_FLAGS = [
    "--no-sandbox",  # CI containers run as root, which Chromium's sandbox refuses
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-first-run",
    "--no-default-browser-check",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

pytestmark = pytest.mark.slow

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"the browser test needs Debian's chromium at {CHROMIUM} in CI")
    pytest.skip("needs Debian's chromium (apt-get install chromium)", allow_module_level=True)


@pytest.fixture
def ui(drive, tmp_path: Path, seeded_checkpoint: Path) -> Iterator[tuple[str, Path, Path]]:
    """``dagster dev`` on this project, its instance set to build a 3-image chunk 00000."""
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    served = serve_synthetic(drive, served_dir, count=1000, photos=range(3))
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    # As for a user who has answered Dagster's one-time newsletter prompt: that modal opens at
    # an unpredictable moment and would close whatever popover the test has open.
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    root = tmp_path / "dataset"
    (home / "ffhq-aging.toml").write_text(
        settings_text(served, seeded_checkpoint, root=str(root), resolution=64, limit=3)
        + '\n[aligned_images]\nnum_processes = 1\n\n[segmentation_masks]\ndevice = "cpu"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFHQ_")}
    with dagster_dev({**env, "DAGSTER_HOME": str(home)}, tmp_path / "dagster-dev.log") as base:
        yield base, home, root


def wait_for_run(home: Path, job: str, limit: float = 600) -> dg.DagsterRun:
    """The latest run of ``job`` once it has ended."""
    deadline = time.monotonic() + limit
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while True:
            runs = instance.get_runs(filters=dg.RunsFilter(job_name=job), limit=1)
            if runs and runs[0].is_finished:
                return runs[0]
            assert time.monotonic() < deadline, f"no finished {job} run: {runs}"
            time.sleep(2)


def test_a_researcher_materializes_a_chunk_from_the_ui(
    ui: tuple[str, Path, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, home, root = ui
    shots = Path(os.environ.get("FFHQ_UI_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS
        )
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.set_default_timeout(60_000)

        page.goto(f"{base}/asset-groups")
        for stage in STAGES:
            expect(page.get_by_text(stage, exact=True).first).to_be_visible()
        # Dagster opens a lineage of several groups collapsed; `ffhq-aging ui` prints the address
        # that opens every group.
        expect(page.get_by_text("aligned_images", exact=True)).to_have_count(0)
        page.goto(lineage_address(base))
        for asset in ("ffhq_metadata_json", "image_metadata", "aligned_images", "training_splits"):
            expect(page.get_by_text(asset, exact=True).first).to_be_visible()
        page.screenshot(path=shots / "lineage.png")

        page.goto(f"{base}/locations/ffhq_aging_assets.definitions/jobs/shared_inputs")
        page.get_by_role("button", name="Materialize all").first.click()
        assert wait_for_run(home, "shared_inputs").is_success

        page.goto(f"{base}/locations/ffhq_aging_assets.definitions/jobs/chunks")
        page.get_by_role("button", name="Materialize all…").first.click()
        dialog = page.get_by_role("dialog").filter(has_text="Partition selection")
        dialog.get_by_text("Select a partition or create one").click()
        page.get_by_placeholder("Filter partitions").fill("00000")
        page.get_by_role("menuitem").filter(has_text="00000").last.click()
        page.keyboard.press("Escape")
        expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
        dialog.get_by_role("button", name="Launch 1 run").click()
        run = wait_for_run(home, "chunks")
        assert run.is_success, run.run_id
        assert run.tags.get("dagster/partition") == "00000"
        page.goto(f"{base}/runs/{run.run_id}")
        expect(page.get_by_text("Success").first).to_be_visible()
        page.screenshot(path=shots / "run.png")

        page.goto(f"{base}/assets/segmentation_masks?view=checks")
        for check in ("mask_count", "mask_format", "mask_classes", "no_temp_files"):
            expect(page.get_by_text(check, exact=True).first).to_be_visible()
        expect(page.get_by_text("Succeeded", exact=True)).to_have_count(6)
        expect(page.get_by_text("Passed", exact=True).first).to_be_visible()
        page.screenshot(path=shots / "checks.png")
        page.goto(f"{base}/assets/segmentation_masks")
        page.get_by_placeholder("Filter metadata keys").fill("preview")
        page.get_by_text("[Show Markdown]").click()
        preview = page.get_by_role("dialog").locator("img[src^='data:image/jpeg;base64']")
        expect(preview).to_be_visible()
        assert preview.evaluate("img => img.naturalWidth") > 0
        page.screenshot(path=shots / "preview.png")

        page.goto(f"{base}/automation")
        row = page.locator("[data-index]").filter(has_text="nightly_backfill")
        switch = row.locator("input[type=checkbox]").last  # the row's on/off switch
        expect(switch).not_to_be_checked()
        expect(switch).to_be_enabled()
        row.locator("label[class*='formatSwitch']").click()
        expect(switch).to_be_checked()
        page.screenshot(path=shots / "automation.png")
        browser.close()

    assert sorted(p.name for p in (root / "ffhq_aging64x64" / "00000").glob("*.png")) == [
        "00000.png",
        "00001.png",
        "00002.png",
    ]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        states = {s.name: s.status.value for s in instance.all_instigator_state()}
    assert states["nightly_backfill"] == "RUNNING"
