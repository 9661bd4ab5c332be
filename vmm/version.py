"""The VMM's version, its one home: pyproject.toml reads it from here (setuptools' attr),
so a tree that is not installed, or a trimmed Python without package metadata, knows it."""
import argparse

VERSION = "0.2.0"


class PrintVersion(argparse.Action):
    """`--version`: print `vmm VERSION` and exit."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the VMM's version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog} {VERSION}")
        parser.exit()
