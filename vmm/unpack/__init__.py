"""Generic unpacking: every page the guest writes and then executes is a layer, caught at its
first instruction, dumped, and let run at hardware speed (see engine.py)."""
from .engine import DEFAULT_MAX_LAYERS, DumpError, Unpacker

__all__ = ["DEFAULT_MAX_LAYERS", "DumpError", "Unpacker"]
