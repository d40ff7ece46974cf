# The README's commands, one word each. ./scripts/test and ./scripts/demo stay the source
# of truth; `make bench` runs every benchmark (scripts/bench): one table, build/bench.json.
# BENCH_FLAGS passes options through, e.g. `make bench BENCH_FLAGS=--quick`.

.PHONY: test demo bench

test:
	./scripts/test

demo:
	./scripts/demo

bench:
	.venv/bin/python scripts/bench $(BENCH_FLAGS)
