"""bedrock-hooks: production behaviour for boto3/botocore Amazon Bedrock clients.

``bedrock_hooks.install(session)`` once at startup; application code keeps calling
``client.converse(...)`` as before. See README.md.
"""

from .catalog import ENTRIES, Decision, Entry
from .classification import Classification, ErrorFacts, classify
from .config import OPTIONS, Settings, load_settings
from .features import Runtime
from .installation import Installation, install, install_global, installation_for, uninstall

__version__ = "0.1.0"

__all__ = [
    "ENTRIES",
    "OPTIONS",
    "Classification",
    "Decision",
    "Entry",
    "ErrorFacts",
    "Installation",
    "Runtime",
    "Settings",
    "classify",
    "install",
    "install_global",
    "installation_for",
    "load_settings",
    "uninstall",
    "__version__",
]
