"""Serve a synthetic FFHQ from the fake Google Drive on loopback, for trying the pipeline offline.

    python -m ffhq_aging_assets_tests.serve_fake_drive --photos 20

prints the ``ffhq-aging build`` options that point at it (with a segmentation checkpoint of
seeded random weights), then serves until interrupted. With ``--settings FILE`` it also writes
those locations as an instance's settings file (e.g. ``.dagster_home/ffhq-aging.toml``), so that
runs launched from the UI use them too.
"""

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

from ffhq_aging_assets_tests.fake_drive import FakeDrive
from ffhq_aging_assets_tests.fixtures import SyntheticFFHQ, serve_synthetic
from ffhq_aging_assets_tests.synthetic import seeded_deeplab_state, write_published_checkpoint


def settings_text(served: SyntheticFFHQ, weights: Path, **dataset: object) -> str:
    """An ``ffhq-aging.toml`` that points every input at the served world."""
    tables = {
        "dataset": dataset,
        "metadata_locations": served.locations(),
        "labels_location": {"url": served.labels_url},
        "deeplab_weights": {
            "url": str(weights),
            "md5": hashlib.md5(weights.read_bytes()).hexdigest(),
            "size": weights.stat().st_size,
        },
    }
    lines = []
    for name, table in tables.items():
        if table:
            lines.append(f"[{name}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000, help="metadata entries [2000]")
    parser.add_argument("--photos", type=int, default=20, help="photos per chunk [20]")
    parser.add_argument("--chunks", type=int, default=1, help="chunks with photos [1]")
    parser.add_argument("--settings", type=Path, help="also write these as an instance's settings")
    args = parser.parse_args()
    drive = FakeDrive().start()
    with tempfile.TemporaryDirectory() as folder:
        photos = [c * 1000 + n for c in range(args.chunks) for n in range(args.photos)]
        served = serve_synthetic(drive, Path(folder), args.entries, photos=photos)
        weights = Path(folder) / "deeplab_model.pth"
        write_published_checkpoint(weights, seeded_deeplab_state())
        if args.settings:
            args.settings.parent.mkdir(parents=True, exist_ok=True)
            args.settings.write_text(settings_text(served, weights))
            print(f"settings written to {args.settings}", flush=True)
        print(
            f"--metadata-url '{served.metadata_url}' --metadata-md5 {served.metadata_md5} "
            f"--metadata-size {served.metadata_size} --license-url '{served.license_url}' "
            f"--license-md5 {served.license_md5} --labels-csv '{served.labels_url}' "
            f"--weights {weights}",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            drive.stop()


if __name__ == "__main__":
    main()
