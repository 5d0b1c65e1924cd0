"""``python -m fedcl`` is the ``fedcl`` command."""

import sys

from fedcl.cli import main

sys.exit(main())
