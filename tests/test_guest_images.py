"""The committed guest images are exactly what their sources build."""
import shutil

import pytest

from conftest import GUESTS

pytestmark = pytest.mark.skipif(shutil.which("as") is None or shutil.which("ld") is None,
                                reason="needs GNU binutils")

IMAGE_SUFFIXES = (".bin", ".elf")


def test_committed_images_match_a_fresh_build(built_guests):
    tmp_path = built_guests
    built = {path.name for path in tmp_path.iterdir() if path.suffix in IMAGE_SUFFIXES}
    committed = {path.name for path in GUESTS.iterdir() if path.suffix in IMAGE_SUFFIXES}
    assert built == committed, f"built but not committed: {built - committed}; committed without a source: {committed - built}"
    stale = [name for name in sorted(built) if (tmp_path / name).read_bytes() != (GUESTS / name).read_bytes()]
    assert not stale, f"committed images differ from their sources' build: {stale} (run `make guests`)"
