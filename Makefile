# Everything runs from a virtual environment this Makefile creates.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all demo demo-linux test guests bench fuzz leaks e2e linux-nested clean

all: test

# The install also builds the cffi modules (ffibuild.py): the pre-parsed declarations and the C helper.
$(STAMP): pyproject.toml setup.py ffibuild.py vmm/fastpath.c kvm_abi/layouts.py vmm/kvm/libc.py
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test]'
	@# An editable install compiles no bytecode (nor does Python with PYTHONDONTWRITEBYTECODE):
	@# without it each run compiles the sources again, which costs more than a small guest's run.
	$(VPY) -m compileall -q vmm kvm_abi >/dev/null
	touch $@

venv: $(STAMP)

guests:
	$(MAKE) -C guest_images

# Boots a guest, then shows the main job: the packed sample run unwatched and
# with its payload page watched (same output and status), and the trace,
# disassembled, with its statistics.
demo: $(STAMP)
	@echo '== hello, long mode'
	$(VENV)/bin/vmm run guest_images/hello_long.bin
	@echo '== packed sample, unwatched'
	$(VENV)/bin/vmm run guest_images/packed_long.bin; echo "exit status $$?"
	@echo '== packed sample, payload page 0x200000 watched'
	$(VENV)/bin/vmm run guest_images/packed_long.bin --watch 0x200000 --trace v2e-demo.jsonl; echo "exit status $$?"
	@echo '== the trace, disassembled'
	$(VENV)/bin/vmm trace show v2e-demo.jsonl --max-instructions 12
	@echo '== its statistics'
	$(VENV)/bin/vmm trace stats v2e-demo.jsonl --top 3

test: $(STAMP)
	$(VPY) -m pytest -q $(PYTEST_ARGS)

# Benchmarks (not tests): PIO exit throughput and single-step rate against C
# loops, V2E event and trace rates, start-up time and RSS (QEMU side by side
# when installed). Prints a table, writes build/bench.json.
bench: $(STAMP)
	$(VPY) -m tests.bench.run
	$(VPY) tests/bench/bench_v2e.py --json build/bench_v2e.json

# Random byte strings as guests in every mode, with and without watching.
fuzz: $(STAMP)
	$(VPY) -m tests.fuzz.run --count $(or $(N),10000)

# The exec-trap patch proven end to end: patched kvm modules for Debian's 6.1 and
# 6.12 kernels, booted under Bochs (VT-x with and without EPT) and QEMU TCG
# (SVM with NPT), running the harness inside (see e2e/README.md).
e2e: $(STAMP)
	$(MAKE) -C e2e

# Debian's kernel booted to /init by the VMM on hardware-assisted KVM, and unpacking in user
# mode: inside Debian under QEMU TCG with an emulated AMD-V CPU (needs what `make e2e` built;
# see tests/nested_linux.py).
linux-nested: $(STAMP)
	$(MAKE) --no-print-directory -C e2e host-deps
	$(VPY) tests/nested_linux.py

# The flagship demo: a static program packed with UPX runs in a Linux guest under
# `vmm run --unpack --unpack-user`; its unpacked code is dumped and compared with `upx -d`'s
# (in the nested machine of linux-nested, with the exec-trap patch).
demo-linux: $(STAMP)
	$(MAKE) --no-print-directory -C e2e host-deps
	$(VPY) tests/nested_linux.py --demo

leaks: $(STAMP)
	VMM_LEAK_VMS=1000 $(VPY) -m pytest -q tests/test_leaks.py

clean:
	$(MAKE) -C guest_images clean
	rm -rf $(VENV) build *.egg-info v2e-demo.jsonl
