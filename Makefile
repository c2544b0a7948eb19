# DMQ metadata service. `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
GOTEST_FLAGS ?=
# Count-based (Nx), not duration-based: go1.26's fuzz coordinator can fail a
# duration-bounded run with a spurious "context deadline exceeded" at the
# deadline (golang/go#75804, fixed in go1.27).
FUZZTIME ?= 200000x
BIN := bin
# Binaries carry their VCS revision (dmqd --version, dmqctl version,
# dmq_build_info) even where GOFLAGS turns stamping off.
BUILDFLAGS ?= -buildvcs=auto

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

.PHONY: generate
generate: ## Regenerate gen/ from proto/ (protoc 3.21.12 + pinned Go plugins).
	scripts/generate.sh

.PHONY: check-generate
check-generate: generate ## Fail if the committed generated code is stale.
	git diff --exit-code -- gen
	test -z "$$(git status --porcelain -- gen)"

# make test checks the generated code where the pinned protoc is installed
# (CI installs it and sets DMQ_REQUIRE_PROTOC=1); elsewhere it says loudly
# that it skipped, and why.
PROTOC_VERSION := libprotoc 3.21.12
.PHONY: check-generate-if-protoc
check-generate-if-protoc:
	@have=$$(protoc --version 2>/dev/null || true); \
	if [ "$$have" = "$(PROTOC_VERSION)" ] || [ -n "$$DMQ_REQUIRE_PROTOC" ]; then $(MAKE) --no-print-directory check-generate; \
	elif [ -z "$$have" ]; then echo "*** SKIPPED check-generate: protoc is not installed (apt-get install -y protobuf-compiler) ***"; \
	else echo "*** SKIPPED check-generate: protoc is '$$have', the generated code is pinned to '$(PROTOC_VERSION)' ***"; fi

.PHONY: image
image: ## Build the dmqd container image (deploy/Dockerfile) from static binaries; IMAGE=dmq/dmqd:dev.
	scripts/image.sh $(or $(IMAGE),dmq/dmqd:dev)

.PHONY: build
build: ## Build every package and the binaries that exist into ./bin.
	$(GO) build ./...
	@mkdir -p $(BIN)
	@for cmd in dmqd dmqctl dmqsim dmqbench; do \
		if ls cmd/$$cmd/*.go >/dev/null 2>&1; then $(GO) build $(BUILDFLAGS) -o $(BIN)/$$cmd ./cmd/$$cmd; fi; \
	done

.PHONY: run
run: ## Start a single-node controller on 127.0.0.1:8080 with data in ./data/metadata.
	$(GO) run ./cmd/dmqd --services.config-path none --server.host 127.0.0.1

.PHONY: cluster
cluster: build ## Start three controllers from config/services.json (ports 9091-9093); logs in ./logs. Refuses while one runs.
	@scripts/cluster.sh start

.PHONY: cluster-stop
cluster-stop: ## Stop the controllers started by make cluster (SIGTERM).
	@scripts/cluster.sh stop

.PHONY: test
test: ## Run the whole suite: tree and lint gates, unit, property, crash, scenario, 50+ simulator seeds, race detector, invariants build, planted bugs, regression seeds with their bugs, generated code, short fuzzing.
	scripts/check-tree.sh
	$(MAKE) --no-print-directory lint
	$(GO) test $(GOTEST_FLAGS) -count=1 ./...
	$(GO) test $(GOTEST_FLAGS) -count=1 -race $(RACE_PACKAGES)
	$(GO) test $(GOTEST_FLAGS) -count=1 -tags invariants ./statemachine ./node
	$(GO) test $(GOTEST_FLAGS) -count=1 -tags plantedbugs -run '^TestPlantedBugsAreCaught$$' ./sim
	$(MAKE) --no-print-directory check-regressions
	$(MAKE) --no-print-directory check-generate-if-protoc
	$(MAKE) --no-print-directory fuzz FUZZTIME=20000x

# The packages that start goroutines: the production runner, the RPC shell
# and the client. The deterministic core has none (TestCorePackagesAreDeterministic).
RACE_PACKAGES := ./node/runner ./rpc/... ./client ./wire ./storage

E2E_ROUNDS ?= 100
.PHONY: test-ui
test-ui: ## The web console in headless Chromium against a real dmqd; fails when Chromium is missing (make test skips, loudly).
	DMQ_REQUIRE_CHROMIUM=1 $(GO) test -count=1 -v -run '^TestConsole$$' ./ui

.PHONY: screenshots
screenshots: ## Regenerate the console's screenshots in docs/ (1440×900, headless Chromium).
	DMQ_REQUIRE_CHROMIUM=1 $(GO) test -count=1 -run '^TestConsoleScreenshots$$' ./ui -ui.screenshots=$(CURDIR)/docs

.PHONY: e2e-docker
e2e-docker: ## deploy/compose.yaml (3 controllers over mutual TLS, 2 storage agents, a container each) under E2E_DOCKER_ROUNDS (20) rounds of docker kill/pause/network disconnect, a cut link, rolling restarts, agent restarts, a wiped volume.
	DMQ_REQUIRE_DOCKER=1 $(GO) test -count=1 -timeout 90m -run '^TestComposeCluster$$' -v ./cmd/dmqd -e2e.compose-rounds=$(or $(E2E_DOCKER_ROUNDS),20)

.PHONY: e2e
e2e: ## Real dmqd processes under E2E_ROUNDS rounds of SIGKILL/SIGSTOP faults (make test runs one round).
	$(GO) test -count=1 -timeout 90m -run '^TestRealProcessFaults$$' -v ./cmd/dmqd -e2e.rounds=$(E2E_ROUNDS)

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME executions each (default 200000x).
	$(GO) test ./statemachine -run '^$$' -fuzz '^FuzzApplyRecord$$' -fuzztime $(FUZZTIME)
	$(GO) test ./statemachine -run '^$$' -fuzz '^FuzzRestore$$' -fuzztime $(FUZZTIME)
	$(GO) test ./node -run '^$$' -fuzz '^FuzzRequests$$' -fuzztime $(FUZZTIME)
	$(GO) test ./rpc/peer -run '^$$' -fuzz '^FuzzFrameReader$$' -fuzztime $(FUZZTIME)

.PHONY: check-regressions
check-regressions: ## Check that each regression seed fails with its bug brought back.
	$(GO) test -count=1 -tags regressions -run '^TestRegressionSeedsFailWithTheirBugs$$' -timeout 30m ./sim

.PHONY: sim
SIM_SEEDS ?= 1..1000
SIM_DURATION ?= 120s
SIM_SHARD ?= 0/1
sim: ## Run a long sweep of seeded simulations (SIM_SEEDS, SIM_DURATION, SIM_SHARD K/N, SIM_SUMMARY file).
	$(GO) build -o $(BIN)/dmqsim ./cmd/dmqsim
	$(BIN)/dmqsim sweep --seeds $(SIM_SEEDS) --duration $(SIM_DURATION) --shard $(SIM_SHARD) $(if $(SIM_SUMMARY),--summary $(SIM_SUMMARY))

.PHONY: bench
bench: build ## Go benchmarks (state machine, storage), then dmqbench on 1- and 3-controller clusters (docs/BENCHMARKS.md).
	$(GO) test -run '^$$' -bench . -benchmem ./statemachine ./storage
	$(BIN)/dmqbench --dmqd $(BIN)/dmqd --json $(BIN)/bench.json

STATICCHECK_VERSION := v0.8.2
.PHONY: lint
lint: ## gofmt, go vet, staticcheck (pinned, built from the module proxy), and go.mod tidiness.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags plantedbugs ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	@$(GO) mod tidy -diff || { echo "go.mod or go.sum is not tidy: run go mod tidy"; exit 1; }

.PHONY: clean
clean: ## Remove build output.
	rm -rf $(BIN)
