"""patches/install.sh inside the emulated machine, with `vmm doctor` after each step.

    python3 installcheck.py intel|amd PATCHED_DIR

The stock kvm and kvm-VENDOR run (modprobe, from /lib/modules), with kvm's
tdp_mmu=0 given at load and halt_poll_ns changed at run time. In order:

  busy       install while this process holds /dev/kvm open: refused with one
             line naming it, the stock modules still loaded
  install    the patched modules from PATCHED_DIR: `vmm doctor` reports the
             patch, the parameters are kept
  uninstall  back to the stock modules: `vmm doctor` reports no patch, the
             parameters are kept

Each step prints "E2E-INSTALL step=NAME key=value ... verdict=PASS|FAIL".
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import vmmcheck  # noqa: E402  (the in-process `vmm` runner)

INSTALL = os.path.join(HERE, "install.sh")
KEPT = {"tdp_mmu": "N", "halt_poll_ns": "123456"}   # kvm parameters, see lib.sh install_case


def sh(*args):
    """Run install.sh ARGS: (exit status, its output lines)."""
    out = "/tmp/install.out"
    status = os.system("sh %s %s >%s 2>&1" % (INSTALL, " ".join(args), out))
    with open(out) as f:
        lines = f.read().splitlines()
    return os.waitstatus_to_exitcode(status), lines


def param(module, name):
    try:
        with open(f"/sys/module/{module}/parameters/{name}") as f:
            return f.read().strip()
    except OSError:
        return None


def loaded_file(module):
    """'patched', 'stock' or 'none' for the loaded module: the patched modules are built out of
    the kernel's tree (make M=arch/x86/kvm), which taints the kernel with 'O' when they load;
    Debian's own are in-tree."""
    try:
        with open(f"/sys/module/{module}/taint") as f:
            taint = f.read().strip()
    except OSError:
        return "none"
    return "patched" if "O" in taint else "stock"


def doctor():
    status, out, err = vmmcheck.vmm("doctor", "--json")
    try:
        check = {c["name"]: c for c in json.loads(out)["checks"]}.get("v2e-patch", {})
    except (ValueError, KeyError):
        return "?", f"doctor output is not JSON (status {status}): {err.strip()[-200:]}"
    return check.get("status", "?"), check.get("detail", "")


def report(step, fields, problems):
    for p in problems:
        print(f"E2E-ERROR install {step}: {p}")
    kv = " ".join(f"{k}={str(v).replace(' ', '_')}" for k, v in fields.items())
    print(f"E2E-INSTALL step={step} {kv} verdict={'FAIL' if problems else 'PASS'}", flush=True)
    return not problems


def kept(problems):
    for name, want in KEPT.items():
        got = param("kvm", name)
        if got != want:
            problems.append(f"kvm.{name} is {got}, wanted {want} kept")


def main():
    vendor, patched_dir = sys.argv[1], sys.argv[2]
    module = f"kvm_{vendor}"
    ok = True

    problems = []
    fd = os.open("/dev/kvm", os.O_RDWR)
    try:
        status, lines = sh("install", patched_dir)
    finally:
        os.close(fd)
    message = lines[-1] if lines else ""
    if status != 1 or len(lines) != 1 or "in use" not in message or str(os.getpid()) not in message:
        problems.append(f"install while /dev/kvm is open: status {status}, output {lines}")
    if loaded_file("kvm") != "stock" or loaded_file(module) != "stock":
        problems.append("the refused install changed the loaded modules")
    print(f"E2E-NOTE install.sh while a VM holds /dev/kvm: {message}")
    ok = report("busy", {"status": status}, problems) and ok

    for step, args, want_file, want_doctor in (
            ("install", ("install", patched_dir), "patched", "PASS"),
            ("uninstall", ("uninstall",), "stock", "WARN")):
        problems = []
        status, lines = sh(*args)
        if status != 0 or len(lines) != 1:
            problems.append(f"install.sh {args[0]}: status {status}, output {lines}")
        files = {m: loaded_file(m) for m in ("kvm", module)}
        if set(files.values()) != {want_file}:
            problems.append(f"loaded modules {files}, wanted {want_file}")
        kept(problems)
        patch, detail = doctor()
        if patch != want_doctor:
            problems.append(f"vmm doctor's v2e-patch is {patch} ({detail}), wanted {want_doctor}")
        print(f"E2E-NOTE install.sh {args[0]}: {lines[-1] if lines else ''}")
        ok = report(step, {"status": status, "modules": want_file if not problems else files,
                           "doctor": patch}, problems) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
