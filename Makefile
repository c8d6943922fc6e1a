# Everything a fresh Debian machine with Python 3.11 and make needs: `make sim`, `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UMQTT := build/lib/umqtt/simple.py
UMQTT_VERSION := 1.3.4

.PHONY: sim test bench lint mpy setup mosquitto clean

sim: setup
	$(PY) -m simulator live $(if $(BROKER),--broker $(BROKER),) $(if $(RUNTIME),--runtime $(RUNTIME),)

test: setup mosquitto
	$(PY) simulator/build_mpy.py
	$(VENV)/bin/ruff check firmware boards simulator host_tools tests
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup mosquitto
	$(PY) -m simulator.bench

lint: setup
	$(VENV)/bin/ruff check firmware boards simulator host_tools tests

mpy: setup
	$(PY) simulator/build_mpy.py

setup: $(STAMP) $(UMQTT)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

# umqtt.simple from micropython-lib, fetched at set-up (never committed). Its sdist cannot
# be pip-installed, but pip download leaves it unpacked in a temporary build folder.
$(UMQTT): | $(STAMP)
	rm -rf build/umqtt-dl && mkdir -p build/umqtt-dl build/lib/umqtt
	TMPDIR=$(CURDIR)/build/umqtt-dl $(PY) -m pip download -q --no-deps --no-clean \
	    --disable-pip-version-check -d build/umqtt-dl/dist \
	    micropython-umqtt.simple==$(UMQTT_VERSION) >/dev/null 2>&1 || true
	cp "$$(find build/umqtt-dl -path '*umqtt/simple.py' | head -n 1)" $(UMQTT)
	touch build/lib/umqtt/__init__.py
	rm -rf build/umqtt-dl

mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	    echo "installing mosquitto with apt-get"; \
	    (apt-get install -y -q mosquitto >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q mosquitto >/dev/null)); \
	else \
	    echo "mosquitto is missing: run 'sudo apt-get install mosquitto' (the broker tests need it)"; \
	    exit 1; \
	fi

clean:
	rm -rf build $(VENV)
