"""Finding the installed console scripts, for tests that run the launcher the way a user does."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from _requires import require_that


def console_script(name: str) -> str:
    """The installed console script ``name``: this interpreter's scripts directory first, then PATH.

    Missing, the test is skipped locally and fails where CI requires the ``console-script`` group.
    """
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        path = Path(directory, name)
        if path.is_file():
            return str(path)
    found = shutil.which(name)
    require_that(None if found else f"{name} is not installed next to {sys.executable} nor on PATH "
                 "(pip install -e .)", group="console-script")
    return str(found)
