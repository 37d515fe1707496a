# Conveniences; the README's two commands do not need make.
GO ?= go

.PHONY: build test vet run bench
build:
	$(GO) build -o bin/caliopen ./cmd/caliopen

run:
	$(GO) run ./cmd/caliopen serve

test:
	scripts/test.sh

vet:
	gofmt -l . && $(GO) vet ./...

# Benchmarks need the same services as the tests (scripts/test.sh starts Cassandra).
bench:
	$(GO) test -run XXX -bench . -benchtime 3s ./store/... ./lookupd/... ./milter/... ./api/...
