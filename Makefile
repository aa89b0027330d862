# Quick start: `make demo` and `make test` each set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test install benchmarks clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: that pin takes the local CPU wheel; an open range would pull CUDA builds.
$(STAMP): setup.py | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[models,train,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vpr-seq demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q -rs test

benchmarks: $(STAMP)
	$(PY) benchmarks/seqmatch_online.py
	$(PY) benchmarks/encoder_throughput.py
	$(PY) benchmarks/node_latency.py
	$(PY) benchmarks/real_data.py
	$(PY) benchmarks/train_nordland.py
	$(PY) benchmarks/closures_replay.py
	$(PY) benchmarks/scale.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build *.egg-info
