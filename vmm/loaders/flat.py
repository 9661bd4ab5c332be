"""Loading guest images into guest RAM."""
import os

from ..x86.boot import BOOT_AREA
from ..errors import BadInput


def read_image(path, limit):
    """The bytes of an image file, refusing one larger than `limit` before reading it."""
    try:
        size = os.stat(path).st_size
        if size > limit:
            raise BadInput(f"{path}: image of {size} bytes does not fit in {limit} bytes of guest memory")
        with open(path, "rb") as image:
            return image.read(limit + 1)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory") from None
    except PermissionError:
        raise BadInput(f"{path}: permission denied") from None
    except OSError as error:
        raise BadInput(f"{path}: {error.strerror}") from None


def load_flat(memory, image, load_addr, mode):
    """Copy a flat binary to load_addr; it must fit in RAM and miss the VMM's boot structures."""
    if not image:
        raise BadInput("the image is empty")
    if not memory.contains(load_addr):
        raise BadInput(f"load address {load_addr:#x} is outside guest memory ({memory.size:#x} bytes)")
    end = load_addr + len(image)
    if not memory.contains(load_addr, len(image)):
        raise BadInput(f"image of {len(image)} bytes at {load_addr:#x} runs past the end of guest memory")
    if mode != "real" and load_addr < BOOT_AREA[1] and BOOT_AREA[0] < end:
        raise BadInput(f"image at {load_addr:#x}-{end:#x} overlaps the VMM's GDT and page tables "
                       f"at {BOOT_AREA[0]:#x}-{BOOT_AREA[1]:#x}")
    memory.write(load_addr, image)
