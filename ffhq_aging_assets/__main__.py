"""``python -m ffhq_aging_assets`` is ``ffhq-aging``."""

import sys

from ffhq_aging_assets.cli import main

sys.exit(main())
