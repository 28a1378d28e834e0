# The two commands the README promises:
#   make run    serve the shipped config.yaml (built-in mock, no keys needed)
#   make test   install what tests need, then vet and run every test with -race

GO ?= go

# Build tags of the gateway binaries made here and in the Dockerfile.
# nomsgpack leaves out gin's MessagePack binding and renderer, which the
# gateway never uses (it decodes its own JSON): 9.5 MB less binary, and
# 3-5 MB less resident memory at rest and under load, which is the
# binary's own pages (issue 18). `go run ./cmd/gateway` builds without
# it, the same gateway with the codec linked in.
GATEWAY_TAGS ?= nomsgpack

.PHONY: run test test-deps vet fmt-check build bench bench-profile bench-micro fuzz soak

run:
	$(GO) run ./cmd/gateway

# scripts/test.sh sets GATEWAY_TEST_REQUIRE so that tests needing
# redis-server fail, not skip, when it is missing: under make test (and so
# in CI) they must run. It names any skipped test and ends with a count.
test: test-deps fmt-check vet
	./scripts/test.sh

test-deps:
	./scripts/test-deps.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

build:
	CGO_ENABLED=0 $(GO) build -tags '$(GATEWAY_TAGS)' -trimpath -ldflags='-s -w' -o bin/gateway ./cmd/gateway

# The full benchmark: mock upstream, bare reverse proxy and gateway as
# separate processes, every scenario against each; writes
# docs/bench/results.{md,json,svg}. About seventeen minutes: latency and
# throughput run in five interleaved rounds, each target reported by its
# median round.
bench:
	$(GO) build -tags '$(GATEWAY_TAGS)' -o bin/ ./cmd/gateway ./cmd/gatewaybench
	bin/gatewaybench run -gateway bin/gateway -out docs/bench

# The gateway's CPU and allocation profiles on each endpoint under each
# scenario (a run of its own: profiling costs CPU); writes
# docs/bench/profiles.md. About four minutes.
bench-profile:
	$(GO) build -tags '$(GATEWAY_TAGS)' -o bin/ ./cmd/gateway ./cmd/gatewaybench
	bin/gatewaybench run -gateway bin/gateway -profile -out docs/bench

# A minute of 300 concurrent streams against an upstream that resets,
# stalls, sends malformed chunks, 429s and in-band errors, with clients
# that abort or stop reading; fails on any stream without exactly one
# terminal event, a done after a broken answer, an upstream request left
# running, or goroutines not back to their baseline. Writes
# docs/bench/soak.json.
soak:
	$(GO) build -tags '$(GATEWAY_TAGS)' -o bin/ ./cmd/gateway ./cmd/gatewaybench
	bin/gatewaybench soak -gateway bin/gateway -out docs/bench/soak.json

# Hot-path micro-benchmarks with allocation counts.
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./api/... ./gateway/ ./internal/...

# Every fuzz target, each for FUZZTIME (go test's -fuzztime: 60s, or 10000x).
# Their seed corpora (f.Add, and testdata/fuzz/ with every input a target
# ever failed on) run in every make test.
FUZZTIME ?= 60s
FUZZ_TARGETS = ./api/native:FuzzDecodeRequest ./api/openai:FuzzDecodeRequest ./api/anthropic:FuzzDecodeRequest ./api/responses:FuzzDecodeRequest \
	./providers/openai:FuzzDecodeChunk ./providers/anthropic:FuzzStream \
	./config:FuzzParse ./internal/jsonstr:FuzzAppend
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done
