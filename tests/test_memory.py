"""Guest memory: bounds-checked access by guest-physical address, memslot layout."""
import pytest

from vmm.machine.memory import MAPPED, READONLY, UNMAPPED, GuestMemoryError

PAGE = 4096

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
        (0, 0x5000, memory.regions[0].host_addr, False), (0x6000, 0x1000, memory.regions[0].host_addr + 0x6000, False),
        (0x8000, (1 << 20) - 0x8000, memory.regions[0].host_addr + 0x8000, False)]
    assert memory.read(0x5000, 4) == b"kept"
    memory.set_unmapped_pages(())
    assert memory.slots == [(0, 1 << 20, memory.regions[0].host_addr, False)]
    with pytest.raises(GuestMemoryError):
        memory.set_unmapped_pages({0x5001})
    with pytest.raises(GuestMemoryError):
        memory.set_unmapped_pages({1 << 20})


def test_page_states_make_read_only_and_missing_slots_and_merge_back(memory):
    host = memory.regions[0].host_addr
    memory.set_page_states({0x3000: READONLY, 0x4000: READONLY, 0x9000: UNMAPPED})
    assert memory.slots == [(0, 0x3000, host, False), (0x3000, 0x2000, host + 0x3000, True),
                            (0x5000, 0x4000, host + 0x5000, False), (0xA000, (1 << 20) - 0xA000, host + 0xA000, False)]
    assert (memory.page_state(0x4000), memory.page_state(0x9000), memory.page_state(0x5000)) == (
        READONLY, UNMAPPED, MAPPED)
    memory.set_page_states({0x3000: MAPPED, 0x4000: MAPPED, 0x9000: MAPPED})
    assert memory.slots == [(0, 1 << 20, host, False)], "same-state neighbours merge again"
    with pytest.raises(GuestMemoryError, match="unknown page state"):
        memory.set_page_states({0x3000: "writable"})


@pytest.mark.parametrize("seed", range(5))
def test_random_page_state_changes_keep_the_slots_a_partition_of_ram(machine, seed):
    """After any sequence of changes the slots are exactly the runs of same-state pages."""
    import random
    rng = random.Random(seed)
    memory = machine(mem_size=1 << 20).memory
    pages = [page * PAGE for page in range(256)]
    for _ in range(60):
        memory.set_page_states({page: rng.choice((MAPPED, READONLY, UNMAPPED)) for page in rng.sample(pages, 8)})
        expected, run = [], None
        for page in pages:
            state = memory.page_state(page)
            if run and run[2] == state:
                run[1] = page + PAGE
            else:
                run = [page, page + PAGE, state]
                expected.append(run)
        host = memory.regions[0].host_addr
        assert memory.slots == [(start, end - start, host + start, state == READONLY)
                                for start, end, state in expected if state != UNMAPPED]


def test_a_vcpu_running_while_its_slot_is_replaced_never_sees_the_window(machine):
    """KVM cannot split a memslot in one step: the VMM deletes the slot and creates the new
    ones, and a vCPU running meanwhile faults on RAM that has no slot for a moment (an
    emulation failure at its fetch, or an MMIO exit for its load or store). The run loop
    does what the fault stopped on RAM, or runs the instruction again: the guest
    (guest_images/memslot_window.s) loops over loads and stores in the slot the host
    replaces 300 times, and every load reads what its store wrote."""
    import threading

    from conftest import GUESTS
    vm = machine(mem_size=16 << 20)
    image = (GUESTS / "memslot_window.bin").read_bytes()
    vm.load(image, mode="long")
    stop_flag = 0x100000 + 0x800
    toggled = threading.Event()

    def replace_slots():
        try:
            for turn in range(300):
                vm.memory.set_page_states({8 << 20: READONLY if turn % 2 == 0 else MAPPED})
        finally:
            vm.memory.write(stop_flag, (1).to_bytes(8, "little"))
            toggled.set()

    thread = threading.Thread(target=replace_slots)
    thread.start()
    try:
        outcome = vm.run(timeout=60)
    finally:
        thread.join()
    assert toggled.is_set()
    assert outcome.kind == "done", outcome
    turns, mismatches = vm.ucalls.reports[0].args[:2]
    assert turns > 0 and mismatches == 0, f"{turns} turns, {mismatches} loads read something else"
