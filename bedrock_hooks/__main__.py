"""``python -m bedrock_hooks ...``: the ``bedrock-hooks`` CLI without a console script on PATH."""

import sys

from .cli import main

sys.exit(main())
