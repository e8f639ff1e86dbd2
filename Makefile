# purchasing-power — every command sets itself up on a fresh machine.
SHELL := /bin/bash
PROJECT := $(abspath .)
PYTHON ?= python3.11
VENV := $(PROJECT)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DAY ?= 2024-12-31
SOURCE ?=
COLUMN_MAP ?=
DEMO_SOURCE := $(PROJECT)/data/demo/ds=2024-12-31/transactions.parquet

export AIRFLOW_HOME ?= $(PROJECT)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(PROJECT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(PROJECT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT := 60
export PYTHONPATH := $(PROJECT)/include:$(PYTHONPATH)
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help install demo airflow-db run test ui bench bench-embed bench-quality lock clean-data

help:
	@echo "make run     # set up, generate demo data, run one day end to end (DAY=, SOURCE=, COLUMN_MAP=)"
	@echo "make test    # set up and run the test suite"
	@echo "make ui      # airflow standalone with this project"
	@echo "make bench   # benchmarks -> bench/results/*.json"

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m purchasing_power.demo --out $(DEMO_SOURCE) --if-missing

airflow-db: $(STAMP)
	@mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (tail -50 $(AIRFLOW_HOME)/db-migrate.log; exit 1)
	$(BIN)/airflow pools set gpu 1 "GPU embedding slots" > /dev/null

run: demo airflow-db
	@conf=$$($(BIN)/python -m purchasing_power.cli conf --day $(DAY) --source '$(SOURCE)' --column-map '$(COLUMN_MAP)'); \
	logical=$$($(BIN)/python -m purchasing_power.cli next-day $(DAY)); \
	echo "running purchasing_power_daily for $(DAY) (logical date $$logical) conf=$$conf"; \
	start=$$(date +%s); \
	$(BIN)/airflow dags test purchasing_power_daily "$$logical" --conf "$$conf" > $(AIRFLOW_HOME)/last-run.log 2>&1 \
	  || { grep -E "ERROR|Error|Traceback|raise|Exception" $(AIRFLOW_HOME)/last-run.log | tail -40; echo "run failed; full log: $(AIRFLOW_HOME)/last-run.log"; exit 1; }; \
	grep -q "state=failed\|DagRunState.FAILED" $(AIRFLOW_HOME)/last-run.log && { grep -E "ERROR|Traceback|Error" $(AIRFLOW_HOME)/last-run.log | tail -40; echo "run failed; full log: $(AIRFLOW_HOME)/last-run.log"; exit 1; }; \
	echo "done in $$(( $$(date +%s) - start )) s; log: $(AIRFLOW_HOME)/last-run.log"; \
	PURCHASING_POWER_SOURCE='$(SOURCE)' $(BIN)/python -m purchasing_power.cli summary --day $(DAY)

test: $(STAMP)
	$(BIN)/python -m pytest tests -q -p no:cacheprovider $(PYTEST_ARGS)

ui: demo airflow-db
	@echo "Airflow UI on http://localhost:8080 — login: admin / password in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated"
	$(BIN)/airflow standalone

bench: bench-embed bench-quality

bench-embed: $(STAMP)
	$(BIN)/python bench/bench_embed.py --out bench/results/embed.json

bench-quality: $(STAMP)
	$(BIN)/python bench/bench_quality.py --out bench/results/quality.json

lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements.txt

clean-data:
	rm -rf data .airflow
