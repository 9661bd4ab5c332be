"""cffi builders, run by setup.py (cffi_modules) when the package is installed:

- kvm_abi._layouts_ffi and vmm.kvm._libc_ffi: the KVM layouts and the libc calls pre-parsed
  (cffi's out-of-line ABI mode), so that importing them parses no C;
- vmm._fastpath: the C helper for the hot loops (API mode, compiled with the system's C
  compiler from vmm/fastpath.c).

The declarations themselves live where they are used (kvm_abi/layouts.py, vmm/kvm/libc.py),
read from those files here without importing the packages. Each generated module is optional:
without it the same declarations are parsed at run time and the hot loops run in Python.
"""
import ast
import os

import cffi

ROOT = os.path.dirname(os.path.abspath(__file__))

# What vmm/fastpath.c exports (its source defines the same).
FASTPATH_CDEF = """
#define VMM_EXIT 0
#define VMM_DRAIN 1
#define VMM_MAX_CONSTANT_PORTS 8
struct vmm_port_plan {
    int32_t stream_port;
    int32_t stream_stop;
    uint32_t stream_room;
    uint32_t stream_length;
    uint8_t *stream;
    uint32_t constants;
    uint16_t constant_ports[8];
    uint8_t constant_values[8];
    uint64_t handled;
};
int vmm_kvm_run(int fd);
int vmm_run_ports(int fd, void *mapping, uint64_t mapping_size, struct vmm_port_plan *plan);
int vmm_insn_setup(const char *const *names, uint32_t count, uint32_t rip_index);
size_t vmm_insn_line(char *out, size_t room, const char *start, size_t start_length, uint64_t step,
                     uint64_t rip, const char *code, size_t code_length, const char *before, const char *after);
"""


def _constant(relative_path, name):
    """The string constant `name` of a module, read from its source."""
    with open(os.path.join(ROOT, relative_path)) as source:
        tree = ast.parse(source.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == name for target in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{relative_path} assigns no {name}")


def layouts():
    ffi = cffi.FFI()
    ffi.cdef(_constant("kvm_abi/layouts.py", "CDEF"))
    ffi.set_source("kvm_abi._layouts_ffi", None)
    return ffi


def libc():
    ffi = cffi.FFI()
    ffi.include(layouts())
    ffi.cdef(_constant("vmm/kvm/libc.py", "CDEF"))
    ffi.set_source("vmm.kvm._libc_ffi", None)
    return ffi


def fastpath():
    ffi = cffi.FFI()
    ffi.cdef(FASTPATH_CDEF)
    with open(os.path.join(ROOT, "vmm", "fastpath.c")) as source:
        ffi.set_source("vmm._fastpath", source.read(), extra_compile_args=["-O2", "-Wall"])
    return ffi
