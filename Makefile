# Cagent build and test entry points. `make test` is what CI runs.
GO      ?= go
BIN     ?= bin/cagent
PKGS    ?= ./...
# Root and namespace tests run in CI; TIMEOUT bounds the whole suite.
TIMEOUT ?= 15m

.PHONY: all build test vet fuzz bench pgo clean ui up

all: build

# The web UIs (adminui/web: the data plane's; controlui/web: the control
# plane's): npm ci, then vite builds each into its dist/, which the binary embeds.
# Both import their shared helpers, style and Vite settings from web/shared.
ui:
	cd adminui/web && npm ci --no-audit --no-fund && npm run build
	cd controlui/web && npm ci --no-audit --no-fund && npm run build

build: ui
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/cagent

# The quick start: build, install runc/runsc/nftables if missing, run `cagent up`.
CONFIG ?= examples/coding-agent.yaml
up: build
	./scripts/up.sh $(CONFIG)

vet:
	$(GO) vet $(PKGS)

# The full suite: vet, then every test (fuzz seed corpora included) under the
# race detector. Root-only tests fail, rather than skip, when CI=true.
test: ui vet
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)

# Short coverage-guided fuzzing of every trust-boundary parser.
FUZZTIME ?= 30s
fuzz:
	./scripts/fuzz-all.sh $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# Regenerate cmd/cagent/default.pgo, the profile `go build` uses for
# profile-guided optimisation of the binary (see scripts/pgo.sh).
pgo:
	./scripts/pgo.sh

clean:
	rm -rf bin
