"""Generic unpacking: catch every page that is written and then executed, layer by layer.

Every tracked page is clean at the start (what the loader put there is the baseline) or written.
A guest write to a clean page makes it written; an instruction fetch from a written page is a
layer event: the region of contiguous pages written since the previous layer, around the
entry, is dumped and becomes clean again, so code that neither writes tracked pages nor runs
freshly written ones runs at hardware speed. The backend (backends.py) keeps written pages
from running unseen.

    clean (read-only slot) --guest write--> written --fetch--> layer event --> clean

Pages the CPU itself writes while it runs (the accessed and dirty bits of page tables and
segment descriptors) cannot live in read-only or missing memslots: the paging structures,
GDT and LDT the vCPUs use are left out of tracking, when the unpacker starts, at each layer,
and when a write hits one.
"""
import threading

import kvm_abi as abi

from ..errors import BadInput
from ..x86 import paging
from ..x86.boot import BOOT_AREA
from ..x86.mode import cpu_mode, linear_rip, privilege_level
from ..x86.paging import PAGE_MASK, PAGE_SIZE
from ..x86.registers import CR0_PE, RFLAGS, RIP, general_registers_as_dict
from ..v2e.watch import WatchSet
from .backends import select_backend
from .dumps import LayerFiles

DEFAULT_MAX_LAYERS = 64
# A write to the page after one just written (a decompressor filling memory) hands over the
# next pages too, twice as many each time up to this many: a memslot change costs
# milliseconds, far more than the guest's writes. A page handed over before the guest writes
# it keeps a copy of its contents; if they are unchanged when it runs, it was not written.
MAX_AHEAD = 64


class Tracking:
    """What both unpackers share: their settings, the end of tracking (the layer budget spent,
    or close()) and the context manager. A subclass sets tracked and starts the backend."""

    def __init__(self, machine, dump_dir, backend, max_layers, on_layer, tracer, trace_layers):
        if max_layers < 1:
            raise BadInput(f"--max-layers must be at least 1, got {max_layers}")
        self.machine = machine
        self.files = LayerFiles(dump_dir)
        self.dump_dir = self.files.directory
        self.backend = select_backend(backend, machine)
        self.max_layers = max_layers
        self.on_layer = on_layer
        self.tracer = tracer
        self.trace_layers = trace_layers
        self.layers = 0
        self.active = True
        self._lock = threading.RLock()
        self._interceptions = []
        self._observations = []
        self._started = False

    def _stop_tracking(self):
        """The layer budget is spent: every tracked page is plain RAM again, the guest runs on."""
        with self._lock:
            self.active = False
            self.backend.stop(self.tracked)
            self.backend.finish()

    def close(self):
        for observation in self._observations:
            observation.remove()
        for interception in self._interceptions:
            interception.restore()
        self._interceptions, self._observations = [], []
        if self._started:
            if self.active:
                self.backend.stop(self.tracked)
                self.backend.finish()
            self.active = False
            self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Unpacker(Tracking):
    """Track guest-physical ranges of a machine (default: all RAM but the VMM's own GDT and page
    tables) and report every layer. on_layer(vcpu, record) sees each layer's record (a dict)
    on the vCPU's thread, the vCPU about to execute the layer's first instruction."""

    def __init__(self, machine, dump_dir, ranges=None, backend="auto", max_layers=DEFAULT_MAX_LAYERS,
                 on_layer=None, tracer=None, trace_layers=False):
        """tracer: a V2E engine made without a trap (backend None) whose trace gets a record of
        each layer, and which traces each layer from its entry when trace_layers is set."""
        super().__init__(machine, dump_dir, backend, max_layers, on_layer, tracer, trace_layers)
        self.tracked = tracked_pages(machine, ranges)
        self.writes = 0                  # guest writes that reached the VMM (first writes, unmapped pages)
        self._written = set()            # written pages (or handed over ahead: see _ahead)
        self._ahead = {}                 # page handed over ahead of the guest's write -> its contents then
        self._batch = 1
        self._written_since_layer = set()
        self._last_writer = {}           # page -> RIP of the write that last made it written
        self._system = set()             # page-table and descriptor-table pages found so far
        try:
            for vcpu in machine.vcpus:
                self._system.update(system_pages(machine.memory, vcpu.get_sregs()))
            self.tracked = self.tracked - self._system
            self.backend.start(self.tracked)
            self._started = True
            for loop in machine.loops:
                self._interceptions.append(self._intercept(loop, abi.KVM_EXIT_MMIO, self._on_mmio))
                self._interceptions.append(self._intercept(loop, self.backend.exit_reason, self._on_fetch))
                if self.backend.ring is not None:
                    # Buffered writes reach RAM before anything handles the exit.
                    self._observations.append(loop.observe(lambda exit, start, end: self.backend.drain()))
        except BaseException:
            self.close()
            raise

    def _intercept(self, loop, reason, method):
        interception = loop.intercept(reason, lambda exit: method(loop, interception, exit))
        return interception

    # -- writes --------------------------------------------------------------

    def _on_mmio(self, loop, interception, exit):
        page = exit.phys_addr & PAGE_MASK
        if not self.active or page not in self.tracked:
            interception.pass_on(exit)
            return
        memory = self.machine.memory
        self.backend.drain()
        if not exit.is_write:
            exit.data[:] = memory.read(exit.phys_addr, exit.length)   # a written page, out of the memslots
            return
        with self._lock:
            memory.write(exit.phys_addr, exit.data)
            self.writes += 1
            if page in self._system:
                self._untrack({page})
            elif page not in self._written:
                self._last_writer[page] = loop.vcpu.register_reader(False)()[RIP]
                self._hand_over(page)
            elif page in self._ahead:
                del self._ahead[page]          # written for real now
                self._last_writer[page] = loop.vcpu.register_reader(False)()[RIP]

    def _hand_over(self, page):
        """The guest wrote a clean page: it is written (with the next ones, ahead, when the
        guest writes pages one after another)."""
        self._batch = min(2 * self._batch, MAX_AHEAD) if page - PAGE_SIZE in self._written else 1
        pages = [page]
        for ahead in range(page + PAGE_SIZE, page + self._batch * PAGE_SIZE, PAGE_SIZE):
            if ahead not in self.tracked or ahead in self._written or ahead in self._system:
                break
            self._ahead[ahead] = self.machine.memory.read(ahead, PAGE_SIZE)
            pages.append(ahead)
        self._written.update(pages)
        self._written_since_layer.update(pages)
        self.backend.written(pages)

    def _really_written(self, page):
        """Whether a written page was written (not only handed over ahead and left as it was)."""
        contents = self._ahead.get(page)
        return contents is None or self.machine.memory.read(page, PAGE_SIZE) != contents

    # -- layers --------------------------------------------------------------

    def _on_fetch(self, loop, interception, exit):
        if not self.active:
            interception.pass_on(exit)
            return
        vcpu = loop.vcpu
        values, sregs = vcpu.register_reader(False)(), vcpu.get_sregs()
        with self._lock:
            target = self.backend.fetch_target(exit, vcpu, values[RIP], sregs, self._written)
            if target is not None:
                self.backend.drain()
                page = target[0] & PAGE_MASK
                if not self._really_written(page):   # handed over ahead, never written: no layer
                    self._clean({page})
                    return
                record, region = self._layer(vcpu, values, sregs, target[0])
        if target is None:
            interception.pass_on(exit)
            return
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

    def _clean(self, pages):
        self._written.difference_update(pages)
        for page in pages:
            self._ahead.pop(page, None)
        self.backend.clean(pages)

    def _untrack(self, pages):
        """Leave pages out of tracking for good (the CPU uses them as paging or descriptor
        tables)."""
        pages = set(pages) & self.tracked
        if pages:
            self.tracked = self.tracked - pages
            self._written.difference_update(pages)
            for page in pages:
                self._ahead.pop(page, None)
            self._written_since_layer.difference_update(pages)
            self.backend.stop(pages)

    def _layer(self, vcpu, values, sregs, gpa):
        system = system_pages(self.machine.memory, sregs)
        self._system.update(system)
        self._untrack(system)
        self.layers += 1
        page = gpa & PAGE_MASK
        since = {p for p in self._written_since_layer if self._really_written(p)} | {page}
        start = end = page
        while start - PAGE_SIZE in since:
            start -= PAGE_SIZE
        while end + PAGE_SIZE in since:
            end += PAGE_SIZE
        end += PAGE_SIZE
        region = list(range(start, end, PAGE_SIZE))
        name = f"layer-{self.layers}-{start:#x}"
        digest, data_file = self.files.region(name, self.machine.memory.read(start, end - start))
        record = layer_record(self.layers, vcpu, values, sregs, gpa, self.backend.name)
        writer = self._last_writer.get(page)
        record.update({
            "region": {"gpa": f"{start:#x}", "size": end - start, "sha256": digest, "file": data_file},
            "pages_written": [f"{p:#x}" for p in sorted(since)],
            "last_writer_rip": None if writer is None else f"{writer:#x}"})
        self.files.record(name, record)
        self._written_since_layer.clear()
        self._clean(region)
        return record, region

    # -- the end -------------------------------------------------------------

    def summary(self):
        return {"backend": self.backend.name, "layers": self.layers, "max_layers": self.max_layers,
                "budget_reached": self.layers >= self.max_layers, "tracked_pages": len(self.tracked),
                "guest_writes_seen": self.writes, "dump_dir": self.dump_dir,
                "coalesced_writes": self.backend.ring.writes if self.backend.ring is not None else 0}


def tracked_pages(machine, ranges):
    """The pages an unpacker tracks: `ranges`, or all RAM but (outside real mode) the VMM's GDT
    and page tables in BOOT_AREA, which are not the guest's."""
    mode = "real" if not machine.vcpus[0].get_sregs().cr0 & CR0_PE else "protected"
    if ranges:
        return WatchSet(ranges, machine.memory, mode).pages
    return frozenset(page for region in machine.memory.regions for page in range(region.gpa, region.end, PAGE_SIZE)
                     if mode == "real" or not BOOT_AREA[0] <= page < BOOT_AREA[1])


def layer_record(index, vcpu, values, sregs, gpa, backend):
    """The fields every layer record has: where the layer was entered and the CPU state there."""
    mode, bits = cpu_mode(sregs)
    return {
        "layer": index, "vcpu": vcpu.id, "entry": {
            "gpa": f"{gpa:#x}", "gva": f"{linear_rip(values[RIP], sregs):#x}", "rip": f"{values[RIP]:#x}"},
        "mode": mode, "bits": bits, "cpl": privilege_level(sregs, values[RFLAGS]),
        "regs": {name: f"{value:#x}" for name, value in general_registers_as_dict(values).items()},
        "cr3": f"{sregs.cr3:#x}", "backend": backend}


def system_pages(memory, sregs):
    """The pages the CPU writes itself as it runs: the paging structures reachable from CR3
    (accessed and dirty bits) and, in protected mode, the GDT and LDT (descriptors' accessed
    bits)."""
    pages = paging.table_pages(memory, sregs)
    tables = ((sregs.gdt.base, sregs.gdt.limit), (sregs.ldt.base, sregs.ldt.limit)) if sregs.cr0 & CR0_PE else ()
    for base, limit in tables:
        if not limit:
            continue
        for linear in range(base & PAGE_MASK, base + limit + 1, PAGE_SIZE):
            physical = paging.translate(memory, sregs, linear)
            if physical is not None:
                pages.add(physical & PAGE_MASK)
    return pages


