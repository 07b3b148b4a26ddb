"""``python -m meet443`` is the ``meet443`` command."""

import sys

from meet443.cli import main

sys.exit(main())
