"""Unpacking in user mode (--unpack-user): code that runs at CPL 3 and was written after its
address space first ran in user mode: what a user-space unpacker makes, and not what the
kernel loads from a file before the program starts, nor the kernel's own code.

Every tracked page is armed (its next instruction fetch traps) or has run (it executes at full
speed and is write-protected, so that a write arms it again):

    armed --fetch at CPL 0--> ran (the kernel's code: no user layer)
    armed --fetch at CPL 3--> a layer when the page was written after the address space first
                              ran in user mode, or through the mapping it runs from; else ran
    ran   --write-----------> armed

The backends arm a page as they do for --unpack (the exec-trap patch: mapped and marked; stock
KVM: out of the memslots). Until the first address space is seen in user mode nothing is a user
layer, so the pages the kernel runs while it boots are not write-protected one by one but all at
once when user mode begins.

Address spaces are told apart by CR3 (paging.address_space). One is seen in user mode when it
fetches an armed page at CPL 3 or writes a write-protected page at CPL 3; each first sighting
begins a new epoch, and every page keeps the epoch of its last write: from the write exits of
write-protected pages, the coalesced-MMIO ring and MMIO exits (stock: armed pages are out of the
memslots) or KVM's dirty log (patched: armed pages stay mapped and writable). "Written after the
address space first ran in user mode" is a write epoch at or after the address space's first.
An address space seen only when it runs code it wrote (it ran nothing armed before: a process
that starts in code another one ran) has no known start; then the page's dirty bit in the
address space's own page tables, set by the CPU on a write through that mapping, says it.

A layer is the run of linear pages around the entry that the address space maps user-executable
and that are armed and written in that sense: dumped in linear order to
DIR/layer-N-LINEAR.bin, with DIR/layer-N-LINEAR.json (the entry, CPL, CR3, the address space,
the pages' guest-physical addresses, which criterion held).
"""
from dataclasses import dataclass

import kvm_abi as abi

from ..x86 import paging
from ..x86.mode import linear_rip, privilege_level
from ..x86.paging import PAGE_MASK, PAGE_SIZE
from ..x86.registers import RFLAGS, RIP
from .engine import DEFAULT_MAX_LAYERS, Tracking, layer_record, system_pages, tracked_pages

# A layer's region stops after this many pages (64 MiB) on either side of the entry page.
MAX_REGION_PAGES = 16384


@dataclass(slots=True)
class AddressSpace:
    """An address space seen in user mode: its number (1, 2, ... in the order seen), CR3 as
    paging.address_space() has it, and the epoch its first sighting began."""

    number: int
    cr3: int
    epoch: int
    layers: int = 0


class UserUnpacker(Tracking):
    """Track guest-physical ranges (default: all RAM but the VMM's GDT and page tables) and
    report every user-mode layer. on_layer(vcpu, record) sees each layer's record (a dict), outside the lock; tracer is
    a V2E engine without a trap that gets a record of each layer (and traces it with
    trace_layers)."""

    def __init__(self, machine, dump_dir, ranges=None, backend="auto", max_layers=DEFAULT_MAX_LAYERS,
                 on_layer=None, tracer=None, trace_layers=False):
        super().__init__(machine, dump_dir, backend, max_layers, on_layer, tracer, trace_layers)
        self.kernel_fetches = self.user_fetches = self.write_exits = 0
        memory = machine.memory
        tracked = set(tracked_pages(machine, ranges))
        for vcpu in machine.vcpus:
            tracked -= system_pages(memory, vcpu.get_sregs())
        self.tracked = frozenset(tracked)
        self._armed = set(self.tracked)
        self._booting = set()            # run at CPL 0 before any user mode: not write-protected yet
        self._epoch = 0
        self._spaces = {}                # paging.address_space(CR3) -> AddressSpace
        self._write_epoch = {}           # page -> the epoch of its last write seen (none: 0)
        self._last_writer = {}           # page -> RIP of the last write that exited
        # Armed pages stay mapped with the exec-trap patch: their writes come from the dirty log.
        self._dirty_log = not self.backend.sees_written_writes
        try:
            self.backend.written(sorted(self.tracked))
            self._started = True
            for loop in machine.loops:
                self._interceptions.append(self._intercept(loop, abi.KVM_EXIT_MMIO, self._on_mmio))
                self._interceptions.append(self._intercept(loop, self.backend.exit_reason, self._on_fetch))
                if self.backend.ring is not None:
                    self._observations.append(loop.observe(lambda exit, start, end: self._drain()))
        except BaseException:
            self.close()
            raise

    def _intercept(self, loop, reason, method):
        interception = loop.intercept(reason, lambda exit: method(loop, interception, exit))
        return interception

    # -- writes --------------------------------------------------------------

    def _drain(self):
        """Apply the writes the coalesced ring holds (stock): they are the current epoch's."""
        pages = self.backend.drain()
        if pages:
            with self._lock:
                for page in pages:
                    self._write_epoch[page] = self._epoch

    def _harvest(self, near=None):
        """The pages KVM's dirty log says were written since it was last read: the current
        epoch's (patched; before the first user mode nothing is logged, nor needs to be). Every
        log is read when an epoch ends; in between, the logs of the slots holding `near`."""
        if self._dirty_log and self._epoch:
            tracked = self.tracked
            for page in self.machine.memory.dirty_pages(near):
                if page in tracked:
                    self._write_epoch[page] = self._epoch

    def _written_after(self, page, space):
        """Whether the page was written after the address space was first seen in user mode."""
        if self._write_epoch.get(page, 0) < space.epoch:
            self._harvest((page,))
        return self._write_epoch.get(page, 0) >= space.epoch

    def _on_mmio(self, loop, interception, exit):
        page = exit.phys_addr & PAGE_MASK
        if not self.active or page not in self.tracked:
            interception.pass_on(exit)
            return
        memory = self.machine.memory
        self._drain()
        if not exit.is_write:
            exit.data[:] = memory.read(exit.phys_addr, exit.length)   # an armed page out of the memslots
            return
        with self._lock:
            memory.write(exit.phys_addr, exit.data)
            if page in self._armed:      # stock: armed, out of the memslots; a write beyond the ring's zones
                self._write_epoch[page] = self._epoch
                return
            self.write_exits += 1
            vcpu = loop.vcpu
            values, sregs = vcpu.register_reader(False)(), vcpu.get_sregs()
            if privilege_level(sregs, values[RFLAGS]) == 3:
                self._space(sregs.cr3)
            self._write_epoch[page] = self._epoch
            self._last_writer[page] = values[RIP]
            self._armed.add(page)
            self.backend.written([page])

    # -- fetches -------------------------------------------------------------

    def _on_fetch(self, loop, interception, exit):
        if not self.active:
            interception.pass_on(exit)
            return
        vcpu = loop.vcpu
        values, sregs = vcpu.register_reader(False)(), vcpu.get_sregs()
        with self._lock:
            target = self.backend.fetch_target(exit, vcpu, values[RIP], sregs, self._armed)
            if target is not None:
                layer = self._fetched(vcpu, values, sregs, *target)
        if target is None:
            interception.pass_on(exit)
            return
        if layer is None:
            return
        record, region = layer
        # Outside the lock: tracing pauses the other vCPUs, which may be waiting for it, and a
        # debugger may hold this vCPU in on_layer.
        if self.on_layer:
            self.on_layer(vcpu, record)
        if self.tracer is not None:
            self.tracer.annotate(dict(record, type="layer"))
            if self.trace_layers and self.active:
                self.tracer.trace_region(loop, region)
        if self.layers >= self.max_layers and self.active:
            self._stop_tracking()

    def _fetched(self, vcpu, values, sregs, gpa, linear):
        """An instruction fetch from an armed page: (layer record, its pages) or None."""
        page = gpa & PAGE_MASK
        if privilege_level(sregs, values[RFLAGS]) != 3:
            self.kernel_fetches += 1
            self._armed.discard(page)
            if self._epoch:
                self.backend.clean([page])
            else:
                self.backend.stop([page])
                self._booting.add(page)
            return None
        self.user_fetches += 1
        space, seen_before = self._space(sregs.cr3)
        memory = self.machine.memory
        rip_linear = linear_rip(values[RIP], sregs)
        rip_gpa = paging.translate(memory, sregs, rip_linear)
        if linear is None:               # the patch's exit on NPT: the fetch's linear address from RIP
            linear = rip_linear
            if (rip_gpa or 0) & PAGE_MASK != page:
                linear = (linear | ~PAGE_MASK) + 1   # an instruction that runs into the page
        translation = paging.walk(memory, sregs, linear)
        if translation is None or translation.physical & PAGE_MASK != page or not self._user_code(
                page, translation, space, seen_before):
            self._armed.discard(page)
            self.backend.clean([page])
            return None
        entry = gpa if rip_gpa is None else rip_gpa
        return self._layer(vcpu, values, sregs, entry, translation, linear & PAGE_MASK, space, seen_before)

    def _space(self, cr3):
        """(the AddressSpace of CR3, whether it was seen in user mode before); a first sighting
        begins a new epoch."""
        key = paging.address_space(cr3)
        space = self._spaces.get(key)
        if space is not None:
            return space, True
        self._harvest()                  # what was written so far, was written before it
        self._epoch += 1
        space = self._spaces[key] = AddressSpace(len(self._spaces) + 1, key, self._epoch)
        if self._epoch == 1:
            # User mode begins: the pages the kernel ran while it booted are write-protected
            # now, and the dirty log starts (patched) after the slots change.
            if self._dirty_log:
                self.machine.memory.log_dirty_pages()
            self.backend.protect(self._booting)
            self._booting.clear()
        return space, False

    def _user_code(self, page, translation, space, seen_before):
        """Whether an armed page the address space runs (or would run) at CPL 3 through
        `translation` is code it wrote: written since it first ran in user mode or, when that
        start was not seen, written through this mapping."""
        if not (translation.user and translation.executable):
            return False
        return self._written_after(page, space) or (not seen_before and translation.dirty)

    # -- layers --------------------------------------------------------------

    def _layer(self, vcpu, values, sregs, gpa, translation, entry_page, space, seen_before):
        """Dump the layer entered at `gpa` (RIP's guest-physical address) whose entry page
        `translation` maps at linear `entry_page`."""
        memory = self.machine.memory
        entry = translation.physical & PAGE_MASK
        pages = {entry_page: entry}
        taken = {entry}
        for step in (-PAGE_SIZE, PAGE_SIZE):
            linear = entry_page + step
            while abs(linear - entry_page) <= MAX_REGION_PAGES * PAGE_SIZE:
                neighbour = paging.walk(memory, sregs, linear)
                if neighbour is None:
                    break
                physical = neighbour.physical & PAGE_MASK
                if physical not in self._armed or physical in taken or not self._user_code(
                        physical, neighbour, space, seen_before):
                    break
                pages[linear] = physical
                taken.add(physical)
                linear += step
        start = min(pages)
        region = [pages[linear] for linear in sorted(pages)]
        self.layers += 1
        space.layers += 1
        name = f"layer-{self.layers}-{start:#x}"
        digest, data_file = self.files.region(name, b"".join(memory.read(page, PAGE_SIZE) for page in region))
        writer = self._last_writer.get(entry)
        record = layer_record(self.layers, vcpu, values, sregs, gpa, self.backend.name)
        record.update({
            "region": {"gpa": f"{region[0]:#x}", "gva": f"{start:#x}", "size": len(region) * PAGE_SIZE,
                       "sha256": digest, "file": data_file, "pages": [f"{page:#x}" for page in region]},
            "pages_written": [f"{page:#x}" for page in sorted(region)],
            "last_writer_rip": None if writer is None else f"{writer:#x}",
            "address_space": {"number": space.number, "cr3": f"{space.cr3:#x}", "seen_before": seen_before},
            "written_after_first_user_run": self._written_after(entry, space),
            "written_through_mapping": translation.dirty,
        })
        self.files.record(name, record)
        self._armed.difference_update(region)
        self.backend.clean(region)
        return record, region

    # -- the end -------------------------------------------------------------

    def summary(self):
        return {"backend": self.backend.name, "layers": self.layers, "max_layers": self.max_layers,
                "budget_reached": self.layers >= self.max_layers, "tracked_pages": len(self.tracked),
                "address_spaces": len(self._spaces), "kernel_fetches": self.kernel_fetches,
                "user_fetches": self.user_fetches, "write_exits": self.write_exits, "dump_dir": self.dump_dir,
                "coalesced_writes": self.backend.ring.writes if self.backend.ring is not None else 0}
