# The README's two commands: `make test` and `make demo`. Both bring up .venv
# from nothing when it is missing or out of date, and do nothing extra when
# it is current. Nobody has to source anything: the environment ROS needs is
# exported here.

SHELL := /bin/bash
ROOT := $(abspath .)
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
PYTHON ?= python3

REQUIREMENTS := requirements/ros.txt requirements/ml.txt requirements/dev.txt
MSG_SOURCES := $(sort $(wildcard spatialthinker_msgs/msg/*.msg spatialthinker_msgs/srv/*.srv \
	spatialthinker_msgs/action/*.action)) spatialthinker_msgs/CMakeLists.txt \
	spatialthinker_msgs/package.xml tools/build_msgs.sh tools/cmake/wheel_env_fixups.cmake
# Stamps keyed on content, not timestamps: a fresh clone or a checkout that
# changes nothing pinned reuses the venv as it is.
REQ_HASH := $(shell cat $(REQUIREMENTS) | sha256sum | cut -c1-16)
MSG_HASH := $(shell cat $(MSG_SOURCES) | sha256sum | cut -c1-16)
PKG_HASH := $(shell cat spatialthinker_ros/setup.py spatialthinker_ros/setup.cfg | sha256sum | cut -c1-16)
REQ_STAMP := $(VENV)/.stamp-requirements-$(REQ_HASH)
MSG_STAMP := $(VENV)/.stamp-msgs-$(MSG_HASH)-$(REQ_HASH)
PKG_STAMP := $(VENV)/.stamp-package-$(PKG_HASH)-$(REQ_HASH)

# The ROS wheels install a normal ROS prefix into the venv; ament_index
# lookups need it named. Discovery stays on this machine, and every run of
# `make test` gets its own domain so parallel runs never see each other.
export AMENT_PREFIX_PATH := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export HF_HUB_DISABLE_TELEMETRY := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv test lint format demo tiny-model clean help
.DEFAULT_GOAL := help

help:
	@echo "make test   - bootstrap .venv if needed, then lint + the whole test suite"
	@echo "make demo   - bootstrap .venv if needed, then run the node end to end (MODEL=... to choose)"
	@echo "make format - apply ruff formatting"

venv: $(PKG_STAMP)

$(REQ_STAMP): $(REQUIREMENTS)
	@echo "==> bootstrapping $(VENV) (ROS 2 Kilted wheels, torch, transformers)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.stamp-*
	@# (Filtered: this machine's pip config names local mirrors that may be absent.)
	$(PY) -m pip install --quiet $(addprefix -r ,$(REQUIREMENTS)) 2>&1 \
		| { grep -v '^WARNING: Location .* is ignored' || true; }; test $${PIPESTATUS[0]} -eq 0
	@touch $@

$(MSG_STAMP): $(REQ_STAMP) $(MSG_SOURCES)
	@echo "==> building spatialthinker_msgs into $(VENV)"
	@rm -f $(VENV)/.stamp-msgs-*
	VENV=$(VENV) bash tools/build_msgs.sh
	@touch $@

$(PKG_STAMP): $(MSG_STAMP) spatialthinker_ros/setup.py spatialthinker_ros/setup.cfg
	@echo "==> installing spatialthinker_ros (editable)"
	@rm -f $(VENV)/.stamp-package-*
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e spatialthinker_ros
	@touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( (RANDOM % 100) + 1 ))} HF_HUB_OFFLINE=1 \
		$(PY) -m pytest spatialthinker_ros/test

demo: venv
	$(PY) tools/demo.py $(if $(MODEL),--model "$(MODEL)")

clean:
	rm -rf build $(VENV)
