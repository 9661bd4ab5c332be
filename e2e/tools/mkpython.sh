#!/bin/sh
# mkpython.sh CACHE OUT TOP SMOKE
# Builds OUT/root: a trimmed Python 3.11 + cffi from Debian packages, plus the
# harness (TOP/vmm, TOP/kvm_abi) and TOP/guest_images, for the initramfs.
#  - packages are downloaded into CACHE/debs and extracted into OUT/pkgs
#  - the extracted interpreter runs on the host to record which modules the
#    smoke test and the harness import (tools/pytrim.py); only those go in,
#    as sourceless .pyc, plus the shared libraries they need
set -eu
cache=$1 out=$2 top=$3 smoke=$4
here=$(cd "$(dirname "$0")" && pwd)
x=$out/pkgs
root=$out/root
PKGS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3-cffi-backend
python3-cffi python3-pycparser python3-ply libffi8 libexpat1 zlib1g libc6"
rm -rf "$x" "$root"
mkdir -p "$x" "$root"
for p in $PKGS; do
	sh "$here/fetch-deb.sh" "$cache" "$p" "$out/pkg-$p"
	cp -a "$out/pkg-$p/." "$x/"
	rm -rf "$out/pkg-$p"
done
py=$x/usr/bin/python3.11
pylib=usr/lib/python3.11
dist=usr/lib/python3/dist-packages

# Which modules are imported: the smoke test, every module of the harness,
# `vmm doctor`, `vmm run --watch` and vmmcheck.py (run on the host's
# /dev/kvm, stock backend; only the imports matter).
export LD_LIBRARY_PATH=$x/lib/x86_64-linux-gnu:$x/usr/lib/x86_64-linux-gnu
set -- --run "$smoke stock"
if [ -d "$top/vmm" ]; then
	set -- "$@" --pkgs "$top:kvm_abi,$top:vmm" --run "-m vmm doctor" \
		--run "-m vmm run guest_images/packed_long.bin --mode long --watch 0x200000 --backend stock --trace $out/t.jsonl --stats-json $out/s.json" \
		--run "-m vmm run guest_images/smp.elf --smp 2 --watch-symbol shared_code --backend stock --trace $out/t.jsonl" \
		--run "$here/../rootfs/e2e/vmmcheck.py --host-ref $out/ref.json" \
		--run "$here/../rootfs/e2e/probes.py --backend stock probe_long"
fi
(cd "$top" && V2E_TOP=$top PYTHONPATH=$top "$py" "$here/pytrim.py" "$out/modules.txt" "$@")
"$py" - "$x" "$root" "$out/modules.txt" <<'PYEOF'
import os, py_compile, shutil, subprocess, sys
x, root, listing = sys.argv[1:]
x = os.path.realpath(x)
keep = [l.strip() for l in open(listing) if l.strip().startswith(x + "/")]
# the landmark Python looks for to find its prefix, and a lib-dynload dir
keep.append(os.path.join(x, "usr/lib/python3.11/os.py"))
os.makedirs(os.path.join(root, "usr/lib/python3.11/lib-dynload"), exist_ok=True)
libdirs = [os.path.join(x, "lib/x86_64-linux-gnu"), os.path.join(x, "usr/lib/x86_64-linux-gnu")]

def needed(path):
    out = subprocess.run(["objdump", "-p", path], capture_output=True, text=True).stdout
    return [l.split()[1] for l in out.splitlines() if l.strip().startswith("NEEDED")]

libs, dropped, n = set(), [], 0
def want_libs(path):
    for lib in needed(path):
        if lib not in libs and not any(os.path.exists(os.path.join(d, lib)) for d in libdirs):
            return False
    return True

def add_libs(path):
    for lib in needed(path):
        if lib in libs:
            continue
        libs.add(lib)
        for d in libdirs:
            if os.path.exists(os.path.join(d, lib)):
                add_libs(os.path.join(d, lib))
                break

for f in sorted(set(keep)):
    rel = os.path.relpath(f, x)
    if f.endswith(".py"):
        dst = os.path.join(root, rel + "c")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        py_compile.compile(f, cfile=dst, dfile="/" + rel, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        n += 1
    elif f.endswith(".so"):
        if not want_libs(f):
            dropped.append(rel)
            continue
        add_libs(f)
        dst = os.path.join(root, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(f, dst)
exe = os.path.join(x, "usr/bin/python3.11")
add_libs(exe)
os.makedirs(os.path.join(root, "usr/bin"), exist_ok=True)
shutil.copy(exe, os.path.join(root, "usr/bin/python3.11"))
os.symlink("python3.11", os.path.join(root, "usr/bin/python3"))
libs.add("ld-linux-x86-64.so.2")
os.makedirs(os.path.join(root, "lib/x86_64-linux-gnu"), exist_ok=True)
os.makedirs(os.path.join(root, "lib64"), exist_ok=True)
for lib in sorted(libs):
    src = next(os.path.join(d, lib) for d in libdirs if os.path.exists(os.path.join(d, lib)))
    shutil.copy(src, os.path.join(root, "lib/x86_64-linux-gnu", lib))  # follows symlinks
os.symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", os.path.join(root, "lib64/ld-linux-x86-64.so.2"))
print("mkpython: %d modules as .pyc, %d extension modules, libs: %s%s" % (
    n, sum(1 for f in keep if f.endswith(".so")) - len(dropped), " ".join(sorted(libs)),
    ("; dropped (missing libs): " + " ".join(dropped)) if dropped else ""))
PYEOF

# The harness (sources + hash-checked-free .pyc) and the guest images.
mkdir -p "$root/opt/v2e"
for d in vmm kvm_abi; do
	[ -d "$top/$d" ] || continue
	(cd "$top" && find "$d" -name '*.py' | cpio -pdm --quiet "$root/opt/v2e" 2>/dev/null ||
		find "$d" -name '*.py' -exec sh -c 'mkdir -p "$0/$(dirname "$1")" && cp "$1" "$0/$1"' "$root/opt/v2e" {} \;)
done
[ -d "$root/opt/v2e/vmm" ] && "$py" -m compileall -q --invalidation-mode unchecked-hash "$root/opt/v2e" >/dev/null
if [ -d "$top/guest_images" ]; then
	mkdir -p "$root/opt/v2e/guest_images"
	cp "$top"/guest_images/*.bin "$top"/guest_images/*.elf "$root/opt/v2e/guest_images/" 2>/dev/null || true
fi
rm -rf "$x"
echo "mkpython: $(du -sh "$root" | cut -f1) in $root"
