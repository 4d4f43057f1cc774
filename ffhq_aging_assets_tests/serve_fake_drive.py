"""Serve a synthetic FFHQ from the fake Google Drive on loopback, for trying the pipeline offline.

    python -m ffhq_aging_assets_tests.serve_fake_drive --photos 20

prints the ``ffhq-aging build`` options that point at it (with a segmentation checkpoint of
seeded random weights), then serves until interrupted.
"""

import argparse
import tempfile
import time
from pathlib import Path

from ffhq_aging_assets_tests.fake_drive import FakeDrive
from ffhq_aging_assets_tests.fixtures import serve_synthetic
from ffhq_aging_assets_tests.synthetic import seeded_deeplab_state, write_published_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000, help="metadata entries [2000]")
    parser.add_argument("--photos", type=int, default=20, help="photos per chunk [20]")
    parser.add_argument("--chunks", type=int, default=1, help="chunks with photos [1]")
    args = parser.parse_args()
    drive = FakeDrive().start()
    with tempfile.TemporaryDirectory() as folder:
        photos = [c * 1000 + n for c in range(args.chunks) for n in range(args.photos)]
        served = serve_synthetic(drive, Path(folder), args.entries, photos=photos)
        weights = Path(folder) / "deeplab_model.pth"
        write_published_checkpoint(weights, seeded_deeplab_state())
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
