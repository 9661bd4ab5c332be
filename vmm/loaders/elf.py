"""Static ELF32/ELF64 executables: parse and validate the headers, load every PT_LOAD segment.

Every header value comes from the file, so each one is checked against the
file's size and the guest's memory before anything is copied.
"""
import struct
from dataclasses import dataclass

from ..errors import BadInput

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_EXEC = 2
EM_386, EM_X86_64 = 3, 62
PT_LOAD = 1
SHT_SYMTAB = 2

# (class) -> (ELF header layout, program header layout, expected machine, machine name)
_LAYOUTS = {
    # e_type e_machine e_version e_entry e_phoff e_shoff e_flags e_ehsize e_phentsize e_phnum
    ELFCLASS32: ("<HHIIIIIHHH", "<IIIIIIII", EM_386, "EM_386"),
    ELFCLASS64: ("<HHIQQQIHHH", "<IIQQQQQQ", EM_X86_64, "EM_X86_64"),
}
_IDENT_SIZE = 16
# (class) -> (offset and layout of e_shoff, offset of e_shentsize/e_shnum, section header
# layout, symbol layout). Section header fields kept: sh_type, sh_offset, sh_size, sh_link,
# sh_entsize; symbol fields kept: st_name, st_value, st_size.
_SECTION_LAYOUTS = {
    ELFCLASS32: (32, "<I", 46, "<IIIIIIIIII", (1, 4, 5, 6, 9), "<IIIBBH", (0, 1, 2)),
    ELFCLASS64: (40, "<Q", 58, "<IIQQQQIIQQ", (1, 4, 5, 6, 9), "<IBBHQQ", (0, 4, 5)),
}


@dataclass(slots=True, frozen=True)
class Segment:
    """One PT_LOAD segment: file bytes [offset, offset+filesz) at paddr, memsz bytes in memory."""

    paddr: int
    vaddr: int
    offset: int
    filesz: int
    memsz: int

    @property
    def end(self):
        return self.paddr + self.memsz


@dataclass(slots=True, frozen=True)
class ElfImage:
    """A validated static executable: its class (32 or 64), entry point and load segments."""

    bits: int
    entry: int
    segments: list


def is_elf(image):
    return image[:4] == ELF_MAGIC


def elf_class(image):
    """32, 64, or None when the identification bytes are missing or unknown."""
    if len(image) < _IDENT_SIZE or not is_elf(image):
        return None
    return {ELFCLASS32: 32, ELFCLASS64: 64}.get(image[4])


def parse(image, memory_size, name="the image"):
    """Validate `image` as a little-endian x86 static executable for RAM [0, memory_size)."""
    if len(image) < _IDENT_SIZE or not is_elf(image):
        raise BadInput(f"{name}: not an ELF file (no \\x7fELF magic)")
    elf_cls, data, version = image[4], image[5], image[6]
    if elf_cls not in _LAYOUTS:
        raise BadInput(f"{name}: unknown ELF class {elf_cls} (expected 1 for ELF32 or 2 for ELF64)")
    if data != ELFDATA2LSB:
        raise BadInput(f"{name}: ELF data encoding {data} is not little-endian")
    if version != EV_CURRENT:
        raise BadInput(f"{name}: ELF identification version {version}, expected {EV_CURRENT}")
    header_format, phdr_format, machine, machine_name = _LAYOUTS[elf_cls]
    bits = 32 if elf_cls == ELFCLASS32 else 64
    header_size = _IDENT_SIZE + struct.calcsize(header_format)
    if len(image) < header_size:
        raise BadInput(f"{name}: truncated ELF header ({len(image)} of {header_size} bytes)")
    (e_type, e_machine, e_version, e_entry, e_phoff, _shoff, _flags, _ehsize,
     e_phentsize, e_phnum) = struct.unpack_from(header_format, image, _IDENT_SIZE)
    if e_type != ET_EXEC:
        raise BadInput(f"{name}: ELF type {e_type} is not a static executable (ET_EXEC)")
    if e_machine != machine:
        raise BadInput(f"{name}: ELF{bits} machine {e_machine}, expected {machine} ({machine_name})")
    if e_version != EV_CURRENT:
        raise BadInput(f"{name}: ELF version {e_version}, expected {EV_CURRENT}")
    if e_phnum == 0:
        raise BadInput(f"{name}: the ELF file has no program headers")
    segments = []
    for index, fields in enumerate(_header_table(image, e_phoff, e_phnum, e_phentsize, phdr_format,
                                                 "program", name)):
        if bits == 32:
            p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz = fields[:6]
        else:
            p_type, _pflags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz = fields[:7]
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        where = f"{name}: segment {index} ({p_paddr:#x}+{p_memsz:#x})"
        if p_filesz > p_memsz:
            raise BadInput(f"{where}: file size {p_filesz:#x} exceeds its memory size")
        if p_offset + p_filesz > len(image):
            raise BadInput(f"{where}: truncated: file bytes {p_offset:#x}+{p_filesz:#x} run past "
                           f"the end of the {len(image)}-byte file")
        if p_paddr + p_memsz > memory_size:
            raise BadInput(f"{where}: outside guest memory (0x0-{memory_size:#x})")
        segments.append(Segment(p_paddr, p_vaddr, p_offset, p_filesz, p_memsz))
    if not segments:
        raise BadInput(f"{name}: the ELF file has no loadable (PT_LOAD) segment")
    segments.sort(key=lambda segment: segment.paddr)
    for before, after in zip(segments, segments[1:]):
        if after.paddr < before.end:
            raise BadInput(f"{name}: segments at {before.paddr:#x}-{before.end:#x} and "
                           f"{after.paddr:#x}-{after.end:#x} overlap")
    entry = physical_address(e_entry, segments)
    if entry is None:
        raise BadInput(f"{name}: entry point {e_entry:#x} is outside every loaded segment")
    return ElfImage(bits, entry, segments)


def _header_table(image, offset, count, entry_size, entry_format, kind, name):
    """The `count` entries of a program or section header table (kind), each unpacked,
    after checking their size and that the table lies inside the file."""
    size = struct.calcsize(entry_format)
    if entry_size != size:
        raise BadInput(f"{name}: {kind} header size {entry_size}, expected {size}")
    if offset + count * size > len(image):
        raise BadInput(f"{name}: truncated: {count} {kind} headers at offset {offset:#x} "
                       f"run past the end of the {len(image)}-byte file")
    return [struct.unpack_from(entry_format, image, offset + index * size) for index in range(count)]


def physical_address(address, segments):
    """An address of the image as a physical address, or None outside every segment: kernels
    linked high (vaddr != paddr) enter at the physical copy of their entry, as QEMU's loader
    does, and their symbols are found the same way."""
    for segment in segments:
        if segment.paddr <= address < segment.end:
            return address
    for segment in segments:
        if segment.vaddr <= address < segment.vaddr + segment.memsz:
            return segment.paddr + address - segment.vaddr
    return None


def find_symbol(image, symbol, name="the image"):
    """(value, size) of `symbol` in the symbol table (SHT_SYMTAB) of an ELF file that
    parse() accepted. Every offset and count read from the file is checked against it."""
    shoff_at, shoff_format, counts_at, shdr_format, shdr_fields, sym_format, sym_fields = \
        _SECTION_LAYOUTS[image[4]]
    (e_shoff,) = struct.unpack_from(shoff_format, image, shoff_at)
    e_shentsize, e_shnum = struct.unpack_from("<HH", image, counts_at)
    if e_shoff == 0 or e_shnum == 0:
        raise BadInput(f"{name}: no section headers, so no symbols (a stripped file?)")
    sym_size = struct.calcsize(sym_format)
    sections = [tuple(fields[i] for i in shdr_fields)   # type, offset, size, link, entsize
                for fields in _header_table(image, e_shoff, e_shnum, e_shentsize, shdr_format, "section", name)]
    wanted = symbol.encode("utf-8", "replace")
    tables = [section for section in sections if section[0] == SHT_SYMTAB]
    if not tables:
        raise BadInput(f"{name}: no symbol table (a stripped file?)")
    for _, offset, size, link, entsize in tables:
        if entsize != sym_size or offset + size > len(image) or link >= e_shnum:
            raise BadInput(f"{name}: malformed symbol table at offset {offset:#x}")
        _, names_at, names_size, _, _ = sections[link]
        names_end = names_at + names_size
        if names_end > len(image):
            raise BadInput(f"{name}: truncated string table at offset {names_at:#x}")
        for at in range(offset, offset + size - sym_size + 1, sym_size):
            fields = struct.unpack_from(sym_format, image, at)
            name_at = names_at + fields[sym_fields[0]]
            end = name_at + len(wanted)
            if end < names_end and image[end] == 0 and image[name_at:end] == wanted:
                return fields[sym_fields[1]], fields[sym_fields[2]]
    raise BadInput(f"{name}: no symbol {symbol!r}")


def check_clear_of(elf, reserved, name="the image"):
    """Refuse segments that overlap a reserved (start, end, what) range the VMM writes."""
    for segment in elf.segments:
        for start, end, what in reserved:
            if segment.paddr < end and start < segment.end:
                raise BadInput(f"{name}: segment at {segment.paddr:#x}-{segment.end:#x} overlaps "
                               f"{what} at {start:#x}-{end:#x}")


def load_segment(memory, image, segment):
    """Copy a segment's file bytes to its physical address and zero the rest of memsz."""
    view = memory.view(segment.paddr, segment.memsz)
    view[:segment.filesz] = image[segment.offset:segment.offset + segment.filesz]
    view[segment.filesz:] = bytes(segment.memsz - segment.filesz)


def load(memory, image, elf):
    for segment in elf.segments:
        load_segment(memory, image, segment)


# Where st_info and st_shndx are in each class's symbol layout (_SECTION_LAYOUTS keeps name,
# value and size), and the symbol kinds that name code or data.
_SYMBOL_INFO_AND_SECTION = {ELFCLASS32: (3, 5), ELFCLASS64: (1, 3)}
_STT_NOTYPE, _STT_OBJECT, _STT_FUNC = 0, 1, 2
_SHN_UNDEF = 0


def symbols(image, name="the image"):
    """[(value, size, symbol name)] of every defined function, object and label in the symbol
    tables (SHT_SYMTAB) of an ELF file; every offset and count read from the file is checked."""
    if elf_class(image) is None:
        raise BadInput(f"{name}: not an ELF file (no \\x7fELF magic, or an unknown class)")
    shoff_at, shoff_format, counts_at, shdr_format, shdr_fields, sym_format, sym_fields = \
        _SECTION_LAYOUTS[image[4]]
    if len(image) < counts_at + 4:
        raise BadInput(f"{name}: truncated ELF header ({len(image)} bytes)")
    (e_shoff,) = struct.unpack_from(shoff_format, image, shoff_at)
    e_shentsize, e_shnum = struct.unpack_from("<HH", image, counts_at)
    if e_shoff == 0 or e_shnum == 0:
        raise BadInput(f"{name}: no section headers, so no symbols (a stripped file?)")
    info_at, section_at = _SYMBOL_INFO_AND_SECTION[image[4]]
    sym_size = struct.calcsize(sym_format)
    sections = [tuple(fields[i] for i in shdr_fields)   # type, offset, size, link, entsize
                for fields in _header_table(image, e_shoff, e_shnum, e_shentsize, shdr_format, "section", name)]
    found = []
    for _, offset, size, link, entsize in (section for section in sections if section[0] == SHT_SYMTAB):
        if entsize != sym_size or offset + size > len(image) or link >= e_shnum:
            raise BadInput(f"{name}: malformed symbol table at offset {offset:#x}")
        _, names_at, names_size, _, _ = sections[link]
        names_end = names_at + names_size
        if names_end > len(image):
            raise BadInput(f"{name}: truncated string table at offset {names_at:#x}")
        for fields in struct.iter_unpack(sym_format, image[offset:offset + size - size % sym_size]):
            if fields[info_at] & 0xF not in (_STT_NOTYPE, _STT_OBJECT, _STT_FUNC) or fields[section_at] == _SHN_UNDEF:
                continue
            name_at = names_at + fields[sym_fields[0]]
            if name_at >= names_end:
                continue
            end = image.find(b"\0", name_at, names_end)
            text = image[name_at:names_end if end < 0 else end].decode("utf-8", "replace")
            if text:
                found.append((fields[sym_fields[1]], fields[sym_fields[2]], text))
    if not any(section[0] == SHT_SYMTAB for section in sections):
        raise BadInput(f"{name}: no symbol table (a stripped file?)")
    return found


PT_NOTE = 4
_NOTE_HEADER = struct.Struct("<III")   # namesz, descsz, type (the same in ELF32 and ELF64)


def _align4(value):
    return (value + 3) & ~3


def notes(image, name="the image"):
    """(owner, type, descriptor) of every note in the PT_NOTE segments of an ELF file that
    parse() accepted; owner without its NUL. Every size read from the file is checked."""
    header_format, phdr_format, _, _ = _LAYOUTS[image[4]]
    fields = struct.unpack_from(header_format, image, _IDENT_SIZE)
    e_phoff, e_phentsize, e_phnum = fields[4], fields[8], fields[9]
    found = []
    for entry in _header_table(image, e_phoff, e_phnum, e_phentsize, phdr_format, "program", name):
        p_type, p_offset, p_filesz = (entry[0], entry[1], entry[4]) if image[4] == ELFCLASS32 else \
            (entry[0], entry[2], entry[5])
        if p_type != PT_NOTE:
            continue
        end = p_offset + p_filesz
        if end > len(image):
            raise BadInput(f"{name}: truncated: note segment {p_offset:#x}+{p_filesz:#x} runs past "
                           f"the end of the {len(image)}-byte file")
        at = p_offset
        while at + _NOTE_HEADER.size <= end:
            namesz, descsz, note_type = _NOTE_HEADER.unpack_from(image, at)
            owner_at = at + _NOTE_HEADER.size
            desc_at = owner_at + _align4(namesz)
            next_at = desc_at + _align4(descsz)
            if desc_at + descsz > end:
                raise BadInput(f"{name}: malformed note at offset {at:#x}: its name and descriptor "
                               f"({namesz} + {descsz} bytes) run past its segment")
            found.append((image[owner_at:owner_at + namesz].rstrip(b"\0"), note_type,
                          image[desc_at:desc_at + descsz]))
            at = next_at
    return found


def find_note(image, owner, note_type, name="the image"):
    """The descriptor of the first note with this owner (bytes) and type, or None."""
    for note_owner, found_type, descriptor in notes(image, name):
        if note_owner == owner and found_type == note_type:
            return descriptor
    return None
