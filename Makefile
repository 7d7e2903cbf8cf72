# Two commands on a fresh Debian machine (as root): `make run` and `make test`.
# `make setup` is what both depend on: Debian packages that are missing, a .venv, and the project installed into it;
# `make test` adds the test extra (pytest, the browser driver, dlib's reference, TensorRT-RTX), which running needs not.

PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.relitcam-installed
TEST_STAMP := $(VENV)/.relitcam-test-installed
DEBS    := espeak-ng libespeak-ng1 blender-data sox chromium portaudio19-dev pulseaudio
RELITCAM := $(VENV)/bin/relitcam

.PHONY: setup debs run test clean

setup: debs $(STAMP)

# Only packages that are missing are installed, so a machine that has them needs neither root nor the network.
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: need root to apt-get install$$missing (or install them yourself)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(VPY) -m pip install -q -e '.[test]'
	touch $(TEST_STAMP)

# The default avatar, live: from the microphone when there is one, else the bundled espeak-ng speech on a loop.
SPEECH_SAMPLE := models/assets/speech_sample.wav
HAS_MIC := from stream.mic import open_portaudio, list_input_devices; import sys; sys.exit(0 if list_input_devices(open_portaudio()) else 1)

run: setup
	@if $(VPY) -c "$(HAS_MIC)" 2>/dev/null; then \
	  $(RELITCAM) run --web --mp4 out/relitcam.mp4; \
	else \
	  echo "no microphone found: the avatar speaks $(SPEECH_SAMPLE) on a loop"; \
	  $(RELITCAM) run --source file --audio $(SPEECH_SAMPLE) --loop --web --mp4 out/relitcam.mp4; \
	fi

# A test that hangs fails after 10 minutes (pytest-timeout, pyproject.toml); the whole run is cut at 80 minutes so that
# a hang outside any test still ends, with where it was (SIGINT: pytest prints the interrupted test and a summary).
test: setup $(TEST_STAMP)
	timeout -s INT -k 60 4800 $(VPY) -m pytest -q -ra

clean:
	rm -rf $(VENV) out build *.egg-info
