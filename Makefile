# fcn_perception -- developer entry points. Each target sets up .venv first if needed
# (scripts/setup.sh: idempotent, about a second when nothing changed).
#
#   make demo     run the main job (scripts/demo.sh) in the venv
#   make test     run the test suite (pytest; ARGS="..." passes options, e.g.
#                 make test ARGS='-m "not slow"'   or   make test ARGS="-k colcon")
#   make setup    create/update .venv (ROS 2 Kilted wheels, torch, vision_msgs, ...)
#   make lint     ruff check
#   make format   ruff format + ruff check --fix
#   make clean    remove build outputs (build/ install/ log/ caches); keeps .venv
#   make distclean  clean + remove .venv

SHELL := /bin/bash
.DEFAULT_GOAL := help

ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
VENV ?= $(ROOT)/.venv
export FCN_VENV := $(VENV)
ARGS ?=

# Run a command inside the venv: its bin/ first on PATH, and no inherited guard
# variable of the ros-wheels-bootstrapper (so Python puts *this* venv's libraries on
# LD_LIBRARY_PATH even when make is started from another venv's Python).
IN_VENV := env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE VIRTUAL_ENV=$(VENV) PATH="$(VENV)/bin:$$PATH"

.PHONY: help setup test demo lint format clean distclean

help:
	@awk '/^#/ {sub(/^# ?/, ""); print; next} {exit}' $(ROOT)/Makefile

setup:
	@bash $(ROOT)/scripts/setup.sh

test: setup
	@cd $(ROOT) && $(IN_VENV) python -m pytest $(ARGS)

demo: setup
	@if [ -f $(ROOT)/scripts/demo.sh ]; then \
	  cd $(ROOT) && $(IN_VENV) bash scripts/demo.sh $(ARGS); \
	else \
	  echo "make demo: scripts/demo.sh does not exist yet (the demo is not written)" >&2; exit 1; \
	fi

lint: setup
	@cd $(ROOT) && $(IN_VENV) ruff check . $(ARGS)

format: setup
	@cd $(ROOT) && $(IN_VENV) ruff format . && $(IN_VENV) ruff check --fix .

clean:
	rm -rf $(ROOT)/build $(ROOT)/install $(ROOT)/log $(ROOT)/.pytest_cache $(ROOT)/.ruff_cache
	find $(ROOT) -path $(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
