# speech-gateway build. Every tool is pinned below and installed into ./bin
# (git-ignored) on first use; nothing global is assumed beyond Go.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)
export GOBIN := $(BIN)

PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
BUF_VERSION                := v1.75.0
STATICCHECK_VERSION        := v0.8.2
GRPCURL_VERSION            := v1.9.4
GHZ_VERSION                := v0.93.0
KUBECTL_VALIDATE_VERSION   := v0.0.4
KUSTOMIZE_VERSION          := v5.7.1
CYCLONEDX_GOMOD_VERSION    := v1.10.0

BUF := $(BIN)/buf
GO_PACKAGES := ./...

# The version the binaries report (--version, speech_gateway_build_info, the
# start-up log) and the image tag: the nearest vX.Y.Z tag (never a gen/ tag of
# the API module), the commits since it and -dirty for local changes.
# `make build VERSION=v1.2.0` sets another. The revision is passed too,
# because go build stamps none with -buildvcs=false and the image's build
# context has no .git.
VERSION  := $(shell git describe --tags --match 'v[0-9]*' --always --dirty 2>/dev/null || echo unknown)
REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(if $(filter %-dirty,$(VERSION)),-dirty)
LDFLAGS  := -X main.version=$(VERSION) -X main.revision=$(REVISION)
IMAGE    ?= registry.example.com/speech-gateway
SIM_IMAGE ?= registry.example.com/slngsim
IMAGE_SOURCE ?= https://github.com/speech-gateway/speech-gateway
CONTAINER_TOOL ?= docker
IMAGE_ENV = VERSION=$(VERSION) REVISION=$(REVISION) IMAGE_SOURCE=$(IMAGE_SOURCE) CONTAINER_TOOL="$(CONTAINER_TOOL)"

.PHONY: help
help: ## Show this help.
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

## Tools. Each stamp file records the version, so a version bump reinstalls.
$(BIN)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION):
	go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@touch $@
$(BIN)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION):
	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@touch $@
# buf comes prebuilt from npm when npm is there (seconds), else it is compiled
# with `go install` (about two minutes). Never a tool line in go.mod: buf needs
# a protobuf pre-release that clashes with protoc-gen-go.
$(BIN)/.buf-$(BUF_VERSION):
	@mkdir -p $(BIN)
	if command -v npm >/dev/null 2>&1; then \
		npm install --silent --no-audit --no-fund --prefix $(BIN)/npm @bufbuild/buf@$(BUF_VERSION:v%=%) && \
		ln -sf npm/node_modules/.bin/buf $(BIN)/buf; \
	else go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION); fi
	$(BUF) --version
	@touch $@
$(BIN)/.staticcheck-$(STATICCHECK_VERSION):
	go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@touch $@
$(BIN)/.grpcurl-$(GRPCURL_VERSION):
	go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	@touch $@
$(BIN)/.ghz-$(GHZ_VERSION):
	go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)
	@touch $@
$(BIN)/.kubectl-validate-$(KUBECTL_VALIDATE_VERSION):
	go install sigs.k8s.io/kubectl-validate@$(KUBECTL_VALIDATE_VERSION)
	@touch $@
$(BIN)/.kustomize-$(KUSTOMIZE_VERSION):
	go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	@touch $@
$(BIN)/.cyclonedx-gomod-$(CYCLONEDX_GOMOD_VERSION):
	go install github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@$(CYCLONEDX_GOMOD_VERSION)
	@touch $@

PROTO_TOOLS := $(BIN)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION) $(BIN)/.protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION) $(BIN)/.buf-$(BUF_VERSION)

.PHONY: tools
tools: $(PROTO_TOOLS) $(BIN)/.staticcheck-$(STATICCHECK_VERSION) $(BIN)/.grpcurl-$(GRPCURL_VERSION) ## Install the pinned tools into ./bin.

.PHONY: generate
generate: $(PROTO_TOOLS) ## Regenerate gen/ from proto/.
	$(BUF) format -w
	$(BUF) generate

.PHONY: check-generate
check-generate: $(PROTO_TOOLS) ## Fail if gen/ is not what proto/ generates.
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(BUF) generate -o "$$tmp"; \
	if ! diff -r -x go.mod -x go.sum -x LICENSE gen "$$tmp/gen"; then echo "gen/ is stale: run 'make generate' and commit the result" >&2; exit 1; fi

.PHONY: lint
lint: $(PROTO_TOOLS) $(BIN)/.staticcheck-$(STATICCHECK_VERSION) ## go vet, gofmt, no Go file over 500 lines, staticcheck, buf lint/format/breaking.
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:" $$unformatted >&2; exit 1; fi
	@long=$$(for f in $$(git ls-files '*.go' | grep -v '^gen/' | grep -v '_test\.go$$'); do \
		n=$$(wc -l < $$f); if [ $$n -gt 500 ]; then echo "$$f ($$n lines)"; fi; done); \
	if [ -n "$$long" ]; then echo "files over 500 lines, split them along their seams:" $$long >&2; exit 1; fi
	@# Build output stays out of git (.gitignore): no tracked file over 1 MiB,
	@# and no tracked executable but scripts.
	@big=$$(git ls-files -z | xargs -0 -r stat -c '%s %n' 2>/dev/null | awk '$$1 > 1048576 {print $$2}'); \
	if [ -n "$$big" ]; then echo "tracked files over 1 MiB (build output? see .gitignore):" $$big >&2; exit 1; fi
	@bins=$$(git ls-files -s | awk '$$1 == "100755" {print $$4}' | while read -r f; do \
		[ -f "$$f" ] && [ "$$(head -c 2 "$$f")" != '#!' ] && echo "$$f"; done || true); \
	if [ -n "$$bins" ]; then echo "tracked executables that are not scripts (build output? see .gitignore):" $$bins >&2; exit 1; fi
	go vet $(GO_PACKAGES)
	staticcheck $(GO_PACKAGES)
	$(BUF) lint
	$(BUF) format -d --exit-code
	@# Compare with main once main has the API; a first commit has nothing to break.
	@if git cat-file -e main:proto/slng/speech/v1/tts.proto 2>/dev/null; then \
		echo "$(BUF) breaking --against '.git#branch=main'"; \
		$(BUF) breaking --against '.git#branch=main'; \
	else echo "buf breaking: main has no proto yet, skipped"; fi

.PHONY: test
test: ## Run every test with the race detector.
	go test -race -count=1 -timeout 10m $(GO_PACKAGES)

.PHONY: build
build: ## Build the binaries into ./bin, reporting VERSION.
	go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

.PHONY: version
version: ## Print the VERSION that builds and image tags use.
	@echo $(VERSION)

.PHONY: image image-slngsim image-tag
image: $(BIN)/.cyclonedx-gomod-$(CYCLONEDX_GOMOD_VERSION) ## Build the production image $(IMAGE):$(VERSION) (speech-gateway alone, OCI labels) and its SBOM, dist/image/speech-gateway/speech-gateway.cdx.json (CONTAINER_TOOL=docker, or buildah).
	$(IMAGE_ENV) ./scripts/image.sh speech-gateway $(IMAGE):$(VERSION)

image-slngsim: $(BIN)/.cyclonedx-gomod-$(CYCLONEDX_GOMOD_VERSION) ## Build the simulator's own image $(SIM_IMAGE):$(VERSION), for test clusters, and its SBOM.
	$(IMAGE_ENV) ./scripts/image.sh slngsim $(SIM_IMAGE):$(VERSION)

image-tag: ## Point deploy/kubernetes at $(IMAGE):$(VERSION) (the kustomization's newTag and the Deployment).
	sed -i -E 's|^(    newTag: ).*|\1"$(VERSION)"|' deploy/kubernetes/kustomization.yaml
	sed -i -E 's|^(          image: registry.example.com/speech-gateway):.*|\1:$(VERSION)|' deploy/kubernetes/deployment.yaml
	@$(MAKE) --no-print-directory check-image-tags

.PHONY: run
run: ## Run the gateway with the embedded SLNG simulator (no key needed).
	go run ./cmd/speech-gateway --dev

.PHONY: smoke
smoke: build $(BIN)/.grpcurl-$(GRPCURL_VERSION) ## Start the real binary in dev mode and drive it with grpcurl.
	./scripts/smoke.sh

FUZZTIME ?= 10s
FAULT_STREAMS ?= 20

.PHONY: fuzz faults
fuzz: ## Run every fuzz target for FUZZTIME each (default 10s).
	go test -run '^$$' -fuzz '^FuzzDecodeFrame$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./slngclient/
	go test -run '^$$' -fuzz '^FuzzConfigs$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./service/
	go test -run '^$$' -fuzz '^FuzzTurnBook$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./service/
	go test -run '^$$' -fuzz '^FuzzParseWAV$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./cmd/speechctl/

faults: ## Run the fault matrix with FAULT_STREAMS streams of each RPC per fault (default 20) and print it.
	FAULT_STREAMS=$(FAULT_STREAMS) go test -race -count=1 -run '^TestFaultMatrix$$' -v ./service/ 2>&1 | \
		grep -v 'logger.go' | grep -E '^(ok|FAIL|--- FAIL)|faults_test.go|^ {10}[a-z]'

SOAK_DURATION ?= 10m
SOAK_STREAMS ?= 200
LOAD_CONCURRENCY ?= 1000

.PHONY: soak load
soak: build ## Churn SOAK_STREAMS streams for SOAK_DURATION; print RSS, goroutines and errors at start and end.
	$(BIN)/speechbench --soak $(SOAK_DURATION) --soak-streams $(SOAK_STREAMS) --gateway $(BIN)/speech-gateway --sim $(BIN)/slngsim --out $(BIN)/soak.json

load: build $(BIN)/.ghz-$(GHZ_VERSION) ## ghz: LOAD_CONCURRENCY concurrent SynthesizeText calls against the gateway in dev mode.
	./scripts/load.sh $(LOAD_CONCURRENCY)

.PHONY: walkthrough
walkthrough: build $(BIN)/.grpcurl-$(GRPCURL_VERSION) ## Run the README's grpcurl walkthrough as written against the gateway on :50051.
	./scripts/walkthrough.sh

.PHONY: examples
examples: build clients ## Run the Go, Python and Java client examples, built on the client packages, against the gateway in dev mode.
	CLIENTS_OUT=$(CLIENTS_OUT) CLIENTS_VERSION=$(CLIENTS_VERSION) MAVEN_REPO=$(MAVEN_REPO) ./examples/run.sh

## Client packages (docs/clients.md), one target per language, so that each
## needs only its own tools: the Go API module gen/ is checked at its own
## floor versions and fetched by tag as a caller would; Python wheels and Java
## jars (with their POMs) are built offline with Debian's protoc, gRPC plugins,
## Python build tools and jars (.ci/run installs them).
CLIENTS_VERSION ?= 0.1.0
CLIENTS_OUT ?= $(CURDIR)/dist/clients
# The Maven repository clients-java installs into; MAVEN_REPO=$$HOME/.m2/repository
# for your own local one.
MAVEN_REPO ?= $(CLIENTS_OUT)/maven-repository

.PHONY: clients clients-go clients-python clients-java
clients: clients-go clients-python clients-java ## All the client packages: clients-go, clients-python and clients-java.

clients-go: ## Vet the Go API module (gen/) and resolve it by a gen/vCLIENTS_VERSION tag, as `go get` through a module proxy does.
	cd gen && go mod tidy -diff && go vet ./...
	cd examples/go && go mod tidy -diff
	./clients/go/check.sh $(CLIENTS_VERSION)

clients-python: $(PROTO_TOOLS) ## Build the Python wheels into CLIENTS_OUT (needs Debian's protoc, gRPC plugin and python3-build).
	./clients/python/build.sh $(CLIENTS_OUT) $(CLIENTS_VERSION)

clients-java: $(PROTO_TOOLS) ## Build the Java jars with their POMs into CLIENTS_OUT and install them into MAVEN_REPO (needs a JDK and Debian's grpc-java).
	./clients/java/build.sh $(CLIENTS_OUT) $(CLIENTS_VERSION) $(MAVEN_REPO)

# A release of the API tags gen/vX.Y.Z (the Go module in gen/) on the commit
# whose go.mod files require that version; the wheels and jars of the same
# release carry X.Y.Z. Creating the tag is all this does: push it yourself.
.PHONY: tag-api
tag-api: ## Tag the Go API module gen/vCLIENTS_VERSION at HEAD, after checking go.mod and examples/go/go.mod require it.
	./clients/go/tag.sh $(CLIENTS_VERSION)

.PHONY: image-check
image-check: build $(BIN)/.cyclonedx-gomod-$(CYCLONEDX_GOMOD_VERSION) ## Build both images as make image does, with buildah; check their files, labels and SBOMs; run them with chroot isolation and probe them (needs buildah).
	VERSION=$(VERSION) REVISION=$(REVISION) IMAGE_SOURCE=$(IMAGE_SOURCE) ./scripts/image-check.sh

# The custom resources in deploy/ are validated against the CRDs their
# projects publish, taken from the projects' Go modules at these versions
# (go mod download: the module proxy, or the module cache when they are in
# it already), never fetched from anywhere else.
ISTIO_API_VERSION := v1.32.0
KEDA_VERSION      := v2.20.2
CRD_MODULES := istio.io/api@$(ISTIO_API_VERSION):kubernetes/customresourcedefinitions.gen.yaml \
	github.com/kedacore/keda/v2@$(KEDA_VERSION):config/crd/bases/keda.sh_scaledobjects.yaml

.PHONY: validate-manifests
validate-manifests: $(BIN)/.kubectl-validate-$(KUBECTL_VALIDATE_VERSION) $(BIN)/.kustomize-$(KUSTOMIZE_VERSION) check-image-tags ## Validate deploy/kubernetes, and each overlay in deploy/overlays built with its components, offline against Kubernetes 1.30 and the pinned CRDs.
	@# Components are patches and resources for the base: they are validated
	@# as the overlays that use them build, and each must be used by one.
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; mkdir "$$tmp/crds"; \
	for m in $(CRD_MODULES); do \
		mod=$${m%%:*}; file=$${m#*:}; \
		dir=$$(cd "$$tmp" && GOFLAGS= go mod download -json "$$mod" | sed -nE 's/^\t"Dir": "(.*)",$$/\1/p'); \
		if [[ -z "$$dir" || ! -f "$$dir/$$file" ]]; then echo "$$mod has no $$file" >&2; exit 1; fi; \
		echo "CRDs: $$mod $$file"; cp "$$dir/$$file" "$$tmp/crds/$$(echo "$$mod" | tr '/@' '__')-$$(basename "$$file")"; \
	done; \
	validate() { $(BIN)/kubectl-validate --version 1.30 --local-crds "$$tmp/crds" "$$@"; }; \
	validate $(filter-out %/kustomization.yaml,$(wildcard deploy/kubernetes/*.yaml)); \
	for o in deploy/overlays/*/; do \
		n=$$(basename "$$o"); echo "kustomize build $$o"; \
		$(BIN)/kustomize build "$$o" > "$$tmp/$$n.yaml"; \
		validate "$$tmp/$$n.yaml"; \
	done; \
	for c in deploy/kubernetes/components/*/; do \
		if ! grep -qs "kubernetes/components/$$(basename "$$c")$$" deploy/overlays/*/kustomization.yaml; then \
			echo "$$c is in no overlay of deploy/overlays, so nothing validates it" >&2; exit 1; fi; \
	done

# An image tag names one build: never latest, and the Deployment and the
# kustomization name the same one.
.PHONY: check-image-tags
check-image-tags:
	@if grep -rnE '^ *image: [^:]+$$' deploy/ || grep -rn ':latest' deploy/; then \
		echo "deploy/: every image needs a version tag, never latest (make image-tag)" >&2; exit 1; fi
	@deploy=$$(sed -nE 's|^ +image: registry.example.com/speech-gateway:(.*)$$|\1|p' deploy/kubernetes/deployment.yaml); \
	kust=$$(sed -nE 's|^ +newTag: "?([^"]*)"?$$|\1|p' deploy/kubernetes/kustomization.yaml); \
	if [[ -z "$$deploy" || "$$deploy" != "$$kust" ]]; then \
		echo "deploy/kubernetes: the Deployment's tag ($$deploy) and the kustomization's newTag ($$kust) differ (make image-tag)" >&2; exit 1; fi

# deploy/monitoring: Prometheus rules with promtool unit tests (Debian's
# prometheus package; .ci/run installs it), and the PrometheusRule generated
# from the rules. TestAlertsEndToEnd, in make test, proves each alert fires.
PROMTOOL ?= promtool

.PHONY: monitoring monitoring-check
monitoring: ## Regenerate deploy/monitoring/prometheusrule.yaml from alerts.rules.yaml.
	go test -count=1 -run '^TestPrometheusRuleMatchesRules$$' ./cmd/speech-gateway/ -update

monitoring-check: ## promtool check and unit-test the alert rules; the PrometheusRule must match them.
	@command -v $(PROMTOOL) >/dev/null || { echo "promtool not found: apt-get install prometheus" >&2; exit 1; }
	$(PROMTOOL) check rules deploy/monitoring/alerts.rules.yaml
	cd deploy/monitoring && $(PROMTOOL) test rules alerts.test.yaml
	go test -count=1 -run '^(TestPrometheusRuleMatchesRules|TestServiceMonitorSelectsTheService|TestMonitoringUsesDocumentedMetrics)$$' ./cmd/speech-gateway/

.PHONY: docs
docs: ## Rewrite the settings tables of README.md and docs/operations.md from cmd/speech-gateway/settings.go and the packages' defaults.
	go test -count=1 -run '^TestGeneratedDocs$$' ./cmd/speech-gateway/ -update

.PHONY: bench bench-quick
bench: build bench-conversion ## Measure the gateway against the floor (a bare relay) and a direct client, each relay pinned alone on CPU 0 (several minutes); writes bench/results.json; and the audio conversion per 20 ms chunk.
	$(BIN)/speechbench --pin --gateway $(BIN)/speech-gateway --floor $(BIN)/speechfloor --sim $(BIN)/slngsim --out bench/results.json

# Audio conversion: the cost of resampling and downmixing one 20 ms chunk
# (internal/pcmconv), and of a stream's whole conversion of one as the
# service does it (24 kHz LINEAR16 to 8 kHz mu-law; 44.1 kHz stereo to
# 16 kHz mono), six runs of each for benchstat.
.PHONY: bench-conversion
bench-conversion: ## The cost of converting one 20 ms chunk (resampling per rate pair, stereo to mono, the service's conversions); writes bench/conversion.txt.
	{ go test -run '^$$' -bench . -benchmem -count 6 ./internal/pcmconv/ && \
	  go test -run '^$$' -bench '^BenchmarkConvert20ms$$' -benchmem -count 6 ./service/; } | tee bench/conversion.txt

bench-quick: build ## A reduced benchmark run that proves the harness works (asserts nothing about speed).
	$(BIN)/speechbench --quick --pin --gateway $(BIN)/speech-gateway --floor $(BIN)/speechfloor --sim $(BIN)/slngsim --out $(BIN)/bench-quick.json
	go test -run '^$$' -bench . -benchtime 10x ./internal/pcmconv/
	go test -run '^$$' -bench '^BenchmarkConvert20ms$$' -benchtime 10x ./service/

.PHONY: ci
ci: lint check-generate test smoke bench-quick ## Everything CI runs.
