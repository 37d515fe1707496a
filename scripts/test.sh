#!/usr/bin/env bash
# The whole test suite, as the README gives it and CI runs it: installs what is
# missing, starts a real Cassandra, runs every Go test with the race detector
# (real Postfix instances are started by the tests themselves), and stops
# Cassandra at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== gofmt, go vet"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted"; exit 1; fi
go vet ./...

cass_dir=${CALIOPEN_CASSANDRA_DIR:-/tmp/caliopen-test-cassandra}
cass_port=${CALIOPEN_CASSANDRA_PORT:-19042}
echo "== starting Cassandra on 127.0.0.1:$cass_port"
scripts/cassandra.sh stop "$cass_dir" >/dev/null 2>&1 || true
rm -rf "$cass_dir"
scripts/cassandra.sh start "$cass_dir" "$cass_port"
trap 'scripts/cassandra.sh stop "$cass_dir"' EXIT
export CALIOPEN_TEST_CASSANDRA=127.0.0.1:$cass_port
export CALIOPEN_TEST_CASSANDRA_DIR=$cass_dir

echo "== go test"
go test -race -count=1 -timeout 45m "$@" ./...

echo "== the API's tests again, on Cassandra"
CALIOPEN_TEST_API_ENGINE=cassandra go test -race -count=1 -timeout 15m "$@" ./api/
