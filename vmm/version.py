"""The VMM's version: the installed package's metadata, or pyproject.toml in a source tree.
Looked up only when asked for (importlib.metadata alone costs a run's start-up a few dozen ms)."""
import argparse
import functools
import pathlib

DISTRIBUTION = "v2e-vmm"
_PYPROJECT = pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml"


@functools.cache
def version():
    from importlib import metadata
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    import tomllib
    try:
        with open(_PYPROJECT, "rb") as project:
            return str(tomllib.load(project)["project"]["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


class PrintVersion(argparse.Action):
    """`--version`: print `vmm VERSION` and exit, the version looked up only then."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the VMM's version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog} {version()}")
        parser.exit()
