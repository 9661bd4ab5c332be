"""Guest memory: bounds-checked access by guest-physical address, memslot layout."""
import pytest

from vmm.machine.memory import GuestMemoryError

pytestmark = pytest.mark.kvm


@pytest.fixture
def memory(machine):
    return machine(mem_size=1 << 20).memory


def test_read_write_and_views_share_storage(memory):
    memory.write(0x1234, b"guest")
    assert memory.read(0x1234, 5) == b"guest"
    view = memory.view(0x1234, 5)
    view[0:1] = b"G"
    assert memory.read(0x1234, 5) == b"Guest"
    memory.write(0x2000, (0x1122334455667788).to_bytes(8, "little"))
    assert memory.read(0x2004, 4) == (0x11223344).to_bytes(4, "little")


@pytest.mark.parametrize("gpa, length", [(1 << 20, 1), ((1 << 20) - 4, 8), (-1, 1), (0, (1 << 20) + 1),
                                         (1 << 64, 1), (0, -1)])
def test_out_of_ram_access_is_refused(memory, gpa, length):
    with pytest.raises(GuestMemoryError):
        memory.view(gpa, length)


def test_cstring_is_clipped_at_the_end_of_ram(memory):
    memory.write((1 << 20) - 3, b"abc")
    assert memory.read_cstring((1 << 20) - 3, 256) == b"abc"


def test_overlapping_or_unaligned_ram_is_refused(memory):
    with pytest.raises(GuestMemoryError, match="overlaps"):
        memory.add_ram(0x80000, 0x100000)
    with pytest.raises(GuestMemoryError, match="not page aligned"):
        memory.add_ram(0x200100, 0x1000)


def test_unmapped_pages_split_the_memslots_and_keep_their_contents(memory):
    memory.write(0x5000, b"kept")
    memory.set_unmapped_pages({0x5000, 0x7000})
    assert memory.slots == [
        (0, 0x5000, memory.regions[0].host_addr), (0x6000, 0x1000, memory.regions[0].host_addr + 0x6000),
        (0x8000, (1 << 20) - 0x8000, memory.regions[0].host_addr + 0x8000)]
    assert memory.read(0x5000, 4) == b"kept"
    memory.set_unmapped_pages(())
    assert memory.slots == [(0, 1 << 20, memory.regions[0].host_addr)]
    with pytest.raises(GuestMemoryError):
        memory.set_unmapped_pages({0x5001})
    with pytest.raises(GuestMemoryError):
        memory.set_unmapped_pages({1 << 20})
