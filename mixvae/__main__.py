"""``python -m mixvae``: the ``mixvae`` command."""

import sys

from mixvae.cli import main

sys.exit(main())
