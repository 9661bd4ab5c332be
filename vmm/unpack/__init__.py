"""Generic unpacking: every page the guest writes and then executes is a layer, caught at its
first instruction, dumped, and let run at hardware speed (see engine.py)."""
from .dumps import DumpError
from .engine import DEFAULT_MAX_LAYERS, Unpacker

__all__ = ["DEFAULT_MAX_LAYERS", "DumpError", "Unpacker"]
