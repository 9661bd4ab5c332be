"""Generic unpacking: every page the guest writes and then executes is a layer, caught at its
first instruction, dumped, and let run at hardware speed (see engine.py)."""
import importlib

__all__ = ["DEFAULT_MAX_LAYERS", "DumpError", "Unpacker"]


def __getattr__(name):
    """Imported from the engine when first asked for: `vmm run` without --unpack does not wait."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".dumps" if name == "DumpError" else ".engine", __name__), name)
    globals()[name] = value
    return value
