"""``python -m facesdk``."""

import sys

from .cli import main

sys.exit(main())
