# tide build and test entry points. `make test` is what CI runs.

GO ?= go
SIM_SEEDS ?= 300
PAXOS_SEEDS ?= 2000

.PHONY: build up test deps vet tidy fuzz mutants bench-chord bench-files bench-log bench-log-etcd release image

# Every build outside the race-detector tests is pure Go (CGO_ENABLED=0)
# and path-free (-trimpath): the binary is static, and vet, the end-to-end
# tests' binary, the Docker image's binary, the second simulation run and
# every copy of the tree `make mutants` builds share one compile of the
# dependencies and of tide's own packages.
NOCGO = CGO_ENABLED=0 GOFLAGS=-trimpath

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS = -s -w -X main.version=$(VERSION)

build:
	$(NOCGO) $(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/tide ./cmd/tide

# Static, stripped binaries for Linux and macOS on amd64 and arm64, with
# the version (tide version) and without build paths, in dist/.
RELEASE_TARGETS = linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
release:
	@mkdir -p dist
	@for t in $(RELEASE_TARGETS); do \
		os=$${t%/*}; arch=$${t#*/}; out=dist/tide-$(VERSION)-$$os-$$arch; \
		echo "building $$out"; \
		$(NOCGO) GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $$out ./cmd/tide || exit 1; \
	done
	@cd dist && sha256sum tide-$(VERSION)-* > SHA256SUMS-$(VERSION) && ls -l tide-$(VERSION)-*

# The FROM scratch image of deploy/docker/Dockerfile around a stripped
# linux binary of this machine's architecture, tagged $(IMAGE): the image
# the Docker provisioner runs and deploy/docker/compose.yaml uses.
IMAGE ?= tide-node:latest
image:
	rm -rf bin/image && mkdir -p bin/image/data bin/image/tmp
	$(NOCGO) GOOS=linux $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/image/tide ./cmd/tide
	docker build -q -f deploy/docker/Dockerfile -t $(IMAGE) bin/image
	@docker image ls $(IMAGE)

# Start the whole system locally (tide up: a 3-node store, a tide log, the
# autoscaler and the dashboard); Ctrl-C stops it.
up: build
	./bin/tide up

# Everything the tests need beyond Go: python3-msgpack, for the tests that
# speak to tide as the seed's Python client scripts do; prometheus, for
# the autoscaler's Prometheus metrics source; redis-server, postgresql and
# nats-server, the real stores antipode's shims and benchmark run against;
# chromium, the headless browser the dashboard's tests drive (chromedp);
# docker-compose, for deploy/docker/compose.yaml's test, unless the
# engine's compose plugin is there.
# (moto_server, for the AWS provisioner's tests, and the Docker engine come
# with the machine.)
deps:
	@if ! /usr/bin/python3 -c 'import msgpack' 2>/dev/null || ! command -v prometheus >/dev/null || \
		! command -v redis-server >/dev/null || ! command -v nats-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || \
		! command -v chromium >/dev/null || \
		{ ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; }; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends python3 python3-msgpack prometheus redis-server postgresql nats-server chromium \
			$$(command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || echo docker-compose); \
	fi
	$(GO) mod download

# go.mod and go.sum must be what `go mod tidy` makes them: every module
# imported is required directly, and nothing unused is left.
tidy:
	@$(GO) mod tidy -diff || (echo "go.mod or go.sum is not tidy: run go mod tidy"; exit 1)

vet:
	$(NOCGO) $(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)
	@big=$$(git ls-files '*.go' | grep -v '_test\.go$$' | xargs wc -l | awk '$$2 != "total" && $$1 > 1000 {print $$2 ": " $$1 " lines"}'); \
		test -z "$$big" || (echo "$$big"; echo "non-test Go files over 1,000 lines: split them by concern"; exit 1)

# The race detector slows the Paxos simulation tenfold, so the suite runs
# under -race with 100 Paxos seeds, then the simulation alone with
# $(PAXOS_SEEDS) seeds (and 400 seeds each of the KV simulations whose
# ring follows failures or lags through a join and a drain under load,
# which the race half runs 20 of). The end-to-end tests (cmd/tide, whose nodes are
# child processes built without -race) and the Docker, AWS and Kubernetes
# provisioners run without -race: compiling their SDKs with the race
# detector was most of a cold CI run, and their concurrency is in the
# processes they drive.
PLAIN_PKGS = tide/cmd/tide tide/bench tide/chaos tide/autoscale/provision/docker tide/autoscale/provision/aws tide/autoscale/provision/kubernetes
RACE_PKGS = $(filter-out $(PLAIN_PKGS),$(shell $(GO) list ./...))

# The simulations are single-threaded and deterministic: under -race they
# run a few seeds (30 per Chord test), and their long runs ($(SIM_SEEDS)
# Chord seeds, $(PAXOS_SEEDS) Paxos seeds, 400 KV ring seeds, 200
# lightweight-transaction seeds), ten times faster without the race
# detector, come after. That long run (one core, pure CPU) runs beside the end-to-end tests
# (mostly waiting on child processes), which CI would otherwise wait for
# one after the other.
# The last step runs the mutants: every safety mutant must die; a change
# that lets one survive, or leaves one stale, fails CI. It skips their
# baselines (each test command run once unmutated, which `make mutants`
# does): the steps above have just run those tests on this tree, and the
# baselines were four fifths of the step (37 mutants: 200 s without them,
# 1,000 s with, on a 2-core machine).
test: deps tidy vet
	TIDE_SIM_SEEDS=30 TIDE_PAXOS_SEEDS=100 $(GO) test -race -count=1 -timeout 20m $(RACE_PKGS)
	@echo "simulation with $(PAXOS_SEEDS) Paxos seeds, beside the end-to-end tests (its output follows theirs)"
	@$(NOCGO) TIDE_PAXOS_SEEDS=$(PAXOS_SEEDS) TIDE_KV_RING_SEEDS=400 TIDE_SIM_SEEDS=$(SIM_SEEDS) TIDE_CAS_SEEDS=200 $(GO) test -count=1 -timeout 20m -run 'TestPaxos|TestKVRingFollowsFailures|TestKVLaggingViewUnderLoad|TestChord|TestCasSimulation' ./sim > .sim-long.log 2>&1 & sim=$$!; \
		$(NOCGO) $(GO) test -count=1 -timeout 20m $(PLAIN_PKGS); plain=$$?; \
		wait $$sim; simrc=$$?; cat .sim-long.log; rm -f .sim-long.log; \
		test $$plain -eq 0 && test $$simrc -eq 0
	$(NOCGO) $(GO) run ./tools/mutants -baseline=false

# Run each fuzz target for a while (not part of `make test`, which replays
# the seed corpora only).
fuzz:
	$(GO) test ./chord/rpc -run XXX -fuzz FuzzDecodeMessage -fuzztime 60s
	$(GO) test ./store -run XXX -fuzz FuzzUpload -fuzztime 60s
	$(GO) test ./store/files -run XXX -fuzz FuzzParseStandIn -fuzztime 60s
	$(GO) test ./wire -run XXX -fuzz FuzzCheck -fuzztime 60s
	$(GO) test ./paxos -run XXX -fuzz 'FuzzDecode$$' -fuzztime 60s
	$(GO) test ./paxos -run XXX -fuzz FuzzDecodeEntry -fuzztime 60s
	$(GO) test ./paxos -run XXX -fuzz 'FuzzKV$$' -fuzztime 60s
	$(GO) test ./paxos -run XXX -fuzz FuzzKVParse -fuzztime 60s
	$(GO) test ./kv -run XXX -fuzz FuzzDecodeMessage -fuzztime 60s
	$(GO) test ./kv -run XXX -fuzz FuzzDecodeRecord -fuzztime 60s
	$(GO) test ./kv -run XXX -fuzz FuzzDecodeStored -fuzztime 60s
	$(GO) test ./resp -run XXX -fuzz FuzzRESP -fuzztime 60s
	$(GO) test ./store -run XXX -fuzz FuzzKVHTTP -fuzztime 60s
	$(GO) test ./antipode -run XXX -fuzz 'FuzzDecode$$' -fuzztime 60s
	$(GO) test ./antipode -run XXX -fuzz FuzzDecodeText -fuzztime 60s
	$(GO) test ./paxos/node -run XXX -fuzz FuzzReadDeployment -fuzztime 60s
	$(GO) test ./antipode/postnotify -run XXX -fuzz FuzzParseProcStat -fuzztime 60s

# Mutation testing of the Paxos safety rules: each mutant in
# tools/mutants/mutants.txt breaks one rule in a copy of the HEAD commit, and
# the tests must fail on it. One mutant at a time, a few minutes in all; not
# part of `make test`. MUTANTS=regexp runs only the mutants it matches.
mutants:
	$(GO) run ./tools/mutants -run '$(MUTANTS)'

bench-chord: build
	./bin/tide bench chord --nodes 16

bench-files: build
	./bin/tide bench files

bench-log: build
	./bin/tide bench log --clients 1,10,100 --modes batched,unbatched,unreplicated

# The tide log against a 3-member etcd, same workload, one run (issue 21's
# targets). etcd-bench is bench/peers, a module of its own.
bench-log-etcd: build
	$(GO) build -C bench/peers -o ../../bin/etcd-bench ./cmd/etcd-bench
	./bin/tide bench log --clients 1,100,1000 --modes batched,unreplicated --duration 8s --rounds 3 --peer etcd --peer-bin bin/etcd-bench
