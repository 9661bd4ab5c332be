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

# Boots the hello guest in each CPU mode and shows its serial output.
demo: $(STAMP)
	$(VENV)/bin/vmm run guest_images/hello_real.bin --mode real
	$(VENV)/bin/vmm run guest_images/hello_protected.bin --mode protected
	$(VENV)/bin/vmm run guest_images/hello_long.bin --mode long --verbose

test: $(STAMP)
	$(VPY) -m pytest -q $(PYTEST_ARGS)

clean:
	$(MAKE) -C guest_images clean
	rm -rf $(VENV) build *.egg-info
