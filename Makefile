# The README's two commands: `make test` and `make demo`. Both bring up the
# venv from nothing when it is missing or out of date, and do nothing extra
# when it is current. Nobody has to source anything: the environment ROS needs
# is exported here.
#
# ROS_DISTRO chooses the ROS 2 distribution: jazzy (the LTS, the default) or
# kilted, e.g. `make test ROS_DISTRO=kilted`. Each has its own venv and its own
# CMake build directory: the two wheel sets share distribution names (one venv
# cannot hold both) and a CMake cache stores the venv's absolute paths.

SHELL := /bin/bash
ROOT := $(abspath .)
PYTHON ?= python3
ROS_DISTROS := jazzy kilted
ROS_DISTRO ?= jazzy
ifeq ($(filter $(ROS_DISTRO),$(ROS_DISTROS)),)
$(error ROS_DISTRO=$(ROS_DISTRO) is not supported: use one of $(ROS_DISTROS))
endif
VENV := $(ROOT)/.venv-$(ROS_DISTRO)
PY := $(VENV)/bin/python
BUILD := $(ROOT)/build/$(ROS_DISTRO)

REQUIREMENTS := requirements/ros-$(ROS_DISTRO).txt requirements/ml.txt requirements/dev.txt
MSG_SOURCES := $(sort $(wildcard spatialthinker_msgs/msg/*.msg spatialthinker_msgs/srv/*.srv \
	spatialthinker_msgs/action/*.action)) spatialthinker_msgs/CMakeLists.txt \
	spatialthinker_msgs/package.xml scripts/build_msgs.sh scripts/cmake/wheel_env_fixups.cmake
# Test-only stand-ins for standard interface packages the PyPI wheels lack
# (tf2_msgs, vision_msgs: scripts/test_interfaces/README.md). One stamp for all:
# their CMake build directories are kept, so a rebuild only redoes what changed.
TEST_INTERFACES := $(patsubst scripts/test_interfaces/%/package.xml,%,\
	$(sort $(wildcard scripts/test_interfaces/*/package.xml)))
TEST_IFACE_SOURCES := $(sort $(wildcard scripts/test_interfaces/*/msg/*.msg \
	scripts/test_interfaces/*/srv/*.srv scripts/test_interfaces/*/action/*.action \
	scripts/test_interfaces/*/CMakeLists.txt scripts/test_interfaces/*/package.xml)) \
	scripts/build_msgs.sh scripts/cmake/wheel_env_fixups.cmake
PKG_SOURCES := spatialthinker_ros/setup.py spatialthinker_ros/setup.cfg scripts/ament_register.py
# The share files are linked, not copied: their names matter here, not their content.
SHARE_FILES := $(sort $(wildcard spatialthinker_ros/package.xml spatialthinker_ros/resource/* \
	spatialthinker_ros/launch/* spatialthinker_ros/config/*))
# Stamps keyed on content, not timestamps: a fresh clone or a checkout that
# changes nothing pinned reuses the venv as it is.
REQ_HASH := $(shell cat $(REQUIREMENTS) | sha256sum | cut -c1-16)
MSG_HASH := $(shell cat $(MSG_SOURCES) | sha256sum | cut -c1-16)
TEST_IFACE_HASH := $(shell cat $(TEST_IFACE_SOURCES) | sha256sum | cut -c1-16)
PKG_HASH := $(shell { cat $(PKG_SOURCES); echo $(SHARE_FILES); } | sha256sum | cut -c1-16)
REQ_STAMP := $(VENV)/.stamp-requirements-$(REQ_HASH)
MSG_STAMP := $(VENV)/.stamp-msgs-$(MSG_HASH)-$(REQ_HASH)
TEST_IFACE_STAMP := $(VENV)/.stamp-test-interfaces-$(TEST_IFACE_HASH)-$(REQ_HASH)
PKG_STAMP := $(VENV)/.stamp-package-$(PKG_HASH)-$(REQ_HASH)

# The ROS wheels install a normal ROS prefix into the venv; ament_index
# lookups need it named. Discovery stays on this machine, and every run of
# `make test` gets its own domain so parallel runs never see each other.
export ROS_DISTRO
export AMENT_PREFIX_PATH := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export HF_HUB_DISABLE_TELEMETRY := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv test lint format demo tiny-model clean help
.DEFAULT_GOAL := help

help:
	@echo "make test   - bootstrap .venv-$(ROS_DISTRO) if needed, then lint + the whole test suite"
	@echo "make demo   - bootstrap .venv-$(ROS_DISTRO) if needed, then run the node end to end (MODEL=... to choose,"
	@echo "              SAMPLE=DIR to play your own RGB-D frames instead of samples/)"
	@echo "make format - apply ruff formatting"
	@echo "ROS_DISTRO=jazzy (default, the LTS) or ROS_DISTRO=kilted, e.g. make test ROS_DISTRO=kilted"

venv: $(PKG_STAMP)

$(REQ_STAMP): $(REQUIREMENTS)
	@echo "==> bootstrapping $(VENV) (ROS 2 $(ROS_DISTRO) wheels, torch, transformers)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.stamp-*
	@# (Filtered: this machine's pip config names local mirrors that may be absent.)
	$(PY) -m pip install --quiet $(addprefix -r ,$(REQUIREMENTS)) 2>&1 \
		| { grep -v '^WARNING: Location .* is ignored' || true; }; test $${PIPESTATUS[0]} -eq 0
	@touch $@

$(MSG_STAMP): $(REQ_STAMP) $(MSG_SOURCES)
	@echo "==> building spatialthinker_msgs into $(VENV)"
	@rm -f $(VENV)/.stamp-msgs-*
	VENV=$(VENV) BUILD_DIR=$(BUILD)/spatialthinker_msgs bash scripts/build_msgs.sh
	@touch $@

# Into the test venv only; COLCON_IGNORE keeps them out of a colcon workspace,
# where a robot's own tf2_msgs and vision_msgs are used.
$(TEST_IFACE_STAMP): $(REQ_STAMP) $(TEST_IFACE_SOURCES)
	@echo "==> building the test-only interface packages $(TEST_INTERFACES) into $(VENV)"
	@rm -f $(VENV)/.stamp-test-interfaces-*
	@for pkg in $(TEST_INTERFACES); do \
		VENV=$(VENV) BUILD_DIR=$(BUILD)/$$pkg BUILD_TYPE=None \
			bash scripts/build_msgs.sh scripts/test_interfaces/$$pkg || exit 1; \
	done
	@touch $@

# pip's editable install leaves out setup.py's data_files (ament index marker,
# package.xml, launch/, config/); ament_register.py links them in as
# `colcon build --symlink-install` would, so the venv's ament index finds the package.
$(PKG_STAMP): $(MSG_STAMP) $(TEST_IFACE_STAMP) $(PKG_SOURCES)
	@echo "==> installing spatialthinker_ros (editable) and registering it in the ament index"
	@rm -f $(VENV)/.stamp-package-*
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e spatialthinker_ros
	$(PY) scripts/ament_register.py --prefix $(VENV) spatialthinker_ros
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
	$(PY) scripts/demo.py $(if $(MODEL),--model "$(MODEL)") $(if $(SAMPLE),--sample "$(SAMPLE)")

clean:
	rm -rf $(BUILD) $(VENV)
