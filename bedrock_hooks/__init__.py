"""bedrock-hooks: production behaviour for boto3/botocore Amazon Bedrock clients.

``bedrock_hooks.install()`` once at startup covers every botocore session of the process (the
clients frameworks create included); application code keeps calling ``client.converse(...)`` as
before. See README.md.

The public names are imported on first use (PEP 562): ``python -m bedrock_hooks run`` and the
``bedrock-hooks`` console script import this package on every launch, and must not pay for
botocore and the handlers just to ``exec`` a command.
"""

__version__ = "0.1.0"

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "ENTRIES": "catalog",
    "Decision": "catalog",
    "Entry": "catalog",
    "Classification": "classification",
    "ErrorFacts": "classification",
    "classify": "classification",
    "OPTIONS": "config",
    "Settings": "config",
    "load_settings": "config",
    "Runtime": "features",
    "Installation": "installation",
    "Kind": "installation",
    "install": "installation",
    "install_global": "installation",
    "installation_for": "installation",
    "uninstall": "installation",
}

__all__ = [*_EXPORTS, "__version__"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .catalog import ENTRIES, Decision, Entry
    from .classification import Classification, ErrorFacts, classify
    from .config import OPTIONS, Settings, load_settings
    from .features import Runtime
    from .installation import Installation, Kind, install, install_global, installation_for, uninstall


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
