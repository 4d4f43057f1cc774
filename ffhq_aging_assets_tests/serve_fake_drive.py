"""Serve a synthetic FFHQ from the fake Google Drive on loopback, for trying the pipeline offline.

    python -m ffhq_aging_assets_tests.serve_fake_drive --photos 20

prints the ``ffhq-aging build`` options that point at it, then serves until interrupted.
"""

import argparse
import tempfile
import time
from pathlib import Path

from ffhq_aging_assets_tests.conftest import serve_synthetic
from ffhq_aging_assets_tests.fake_drive import FakeDrive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000, help="metadata entries [2000]")
    parser.add_argument("--photos", type=int, default=20, help="photos of chunk 00000 [20]")
    args = parser.parse_args()
    drive = FakeDrive().start()
    with tempfile.TemporaryDirectory() as folder:
        served = serve_synthetic(drive, Path(folder), args.entries, photos=range(args.photos))
        print(
            f"--metadata-url '{served.metadata_url}' --metadata-md5 {served.metadata_md5} "
            f"--metadata-size {served.metadata_size} --license-url '{served.license_url}' "
            f"--license-md5 {served.license_md5}",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            drive.stop()


if __name__ == "__main__":
    main()
