# Everything runs from a virtual environment this Makefile creates.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all demo test guests clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP)

guests:
	$(MAKE) -C guest_images

# Boots a guest, then shows the main job: the packed sample run unwatched and
# with its payload page watched (same output and status), and the trace.
demo: $(STAMP)
	@echo '== hello, long mode'
	$(VENV)/bin/vmm run guest_images/hello_long.bin
	@echo '== packed sample, unwatched'
	$(VENV)/bin/vmm run guest_images/packed_long.bin; echo "exit status $$?"
	@echo '== packed sample, payload page 0x200000 watched'
	$(VENV)/bin/vmm run guest_images/packed_long.bin --watch 0x200000 --trace v2e-demo.jsonl; echo "exit status $$?"
	@echo '== the trace'
	$(VENV)/bin/vmm trace show v2e-demo.jsonl --max-instructions 12

test: $(STAMP)
	$(VPY) -m pytest -q $(PYTEST_ARGS)

clean:
	$(MAKE) -C guest_images clean
	rm -rf $(VENV) build *.egg-info v2e-demo.jsonl
