# Every target does its own set-up (venv, pinned packages, hub database, Airflow home).
.PHONY: demo test faults ui celery bench clean

demo: ## Run the whole sync once against the sandbox and print a summary
	@bash scripts/demo.sh

test: ## Lint, type check, check the import contracts and run the whole test suite
	@bash scripts/test.sh

faults: ## The fault matrix alone (also part of make test); rewrites tests/faults/README.md from the run
	@bash -c 'source scripts/common.sh; setup_all; cd "$$REPO"; FAULTS_README=1 pytest -q tests/faults'

ui: ## Airflow standalone on http://127.0.0.1:8080 with the sandbox simulators
	@bash scripts/ui.sh

celery: ## Airflow on the CeleryExecutor (api-server, scheduler, dag-processor, triggerer, 2 workers, Flower), no Docker
	@bash scripts/celery.sh

bench: ## Benchmark every stage at N SKUs (default 1000000) vs the I/O floor and the naive idiom
	@N=$(or $(N),1000000) bash bench/run.sh

bench-pricing: ## Pricing of one channel at N offers (default 1000000): full vs incremental after a 1 % change
	@bash -c 'source scripts/common.sh; ensure_venv; python bench/pricing.py --n $(or $(N),1000000)'
bench-sources: ## Parse an N-item supplier feed (default 1000000) into staging: XML, BMEcat, CSV, gzip XML; peak RSS, items/s
	@bash -c 'source scripts/common.sh; ensure_venv; python bench/sources.py --n $(or $(N),1000000)'
bench-quality: ## Quality gate on an N-row staged batch (default 1000000): one SQL pass vs GX's SQL engine, Data Docs
	@bash -c 'source scripts/common.sh; ensure_venv; python bench/quality.py --n $(or $(N),1000000)'
bench-feeds: ## Google/Meta/Ceneo feeds at N items (default 1000000): items/s, peak RSS, parse-back, lxml comparison, hub end to end
	@bash -c 'source scripts/common.sh; ensure_venv; python bench/feeds.py --n $(or $(N),1000000)'

clean: ## Remove local state (Airflow home, data, venv); databases are kept
	rm -rf .airflow .airflow-celery .data .venv
