#!/usr/bin/env bash
# The project's single test command (CI runs it through .ci/run).
#
#   scripts/test.sh [go test flags...]      e.g. scripts/test.sh -run TestSync -v
#
# 1. starts a throwaway PostgreSQL (scripts/pg.sh) and exports HS_TEST_POSTGRES_DSN, a superuser
#    DSN from which Go tests create their own databases; if HS_TEST_POSTGRES_DSN is already set,
#    that server is used instead and none is started;
# 2. gofmt -l (fails if any file needs formatting), go vet ./..., go test -count=1 ./...
#    (extra arguments go to go test, before ./...);
# 3. if scripts/e2e/package.json exists: builds cmd/homeserver, npm ci in scripts/e2e, and runs the
#    matrix-js-sdk tests (scripts/e2e/**/*.test.mjs, node --test) against a fresh server on SQLite,
#    then on PostgreSQL; the tests of scripts/e2e/federation run against two fresh servers on
#    127.0.0.1 and 127.0.0.2 that federate over TLS with a throwaway CA, on each backend.
# Every step runs even if an earlier one failed; the exit status is non-zero if any failed.
# The PostgreSQL server, homeserver processes and temp files are always cleaned up.
#
# Environment:
#   HS_TEST_POSTGRES_DSN   use this PostgreSQL instead of starting one
#   HS_TEST_SKIP_E2E=1     skip the end-to-end tests
#   HS_TEST_ONLY_E2E=1     skip gofmt/vet/go test, run only the end-to-end tests
#   HS_E2E_TIMEOUT         time limit for the node tests of one backend (default 8m)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/pg.sh
source "$ROOT/scripts/pg.sh"

WORK=""     # temp dir: homeserver binary, e2e data dirs and logs
HS_PID=""   # running homeserver (e2e)
FED_PIDS=() # running homeservers of the federation e2e tests
HS_PORT=""
HS_LOG=""
FAILED=()
E2E_SECRET=e2e-secret
# Presence timeouts of the e2e servers (presence.idle_timeout / offline_timeout; at least 100ms),
# short so that signals.test.mjs sees a user go offline within seconds. The tests get them too.
E2E_PRESENCE_IDLE_TIMEOUT=2s
E2E_PRESENCE_OFFLINE_TIMEOUT=3s

section() { printf '\n========== %s ==========\n' "$*"; }
note() { printf '>>> %s\n' "$*"; }
fail() {
	FAILED+=("$1")
	printf '>>> FAILED: %s\n' "$1"
}

cleanup() {
	local rc=$?
	set +e
	stop_homeserver
	local pid
	for pid in "${FED_PIDS[@]}"; do stop_pid "$pid"; done
	pg_stop
	[[ -n "$WORK" ]] && rm -rf "$WORK"
	return "$rc"
}
trap cleanup EXIT
trap 'echo; echo ">>> interrupted"; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---------------------------------------------------------------------------------------------

# Non-vendored Go files: tracked plus untracked-but-not-ignored when in git, else all.
list_go_files() {
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git ls-files -z --cached --others --exclude-standard -- '*.go'
	else
		find . -name '*.go' -type f -print0
	fi | while IFS= read -r -d '' f; do
		f="${f#./}"
		case "/$f" in
		*/vendor/* | */testdata/* | */node_modules/* | */.*/*) continue ;;
		esac
		[[ -f "$f" ]] && printf '%s\n' "$f"
	done
}

# dsn_with_db DSN DB: the same DSN pointing at database DB.
dsn_with_db() {
	local dsn="$1" db="$2"
	if [[ "$dsn" =~ ^(postgres(ql)?://[^/?]*)(/[^?]*)?(\?.*)?$ ]]; then
		printf '%s/%s%s\n' "${BASH_REMATCH[1]}" "$db" "${BASH_REMATCH[4]}"
	else
		printf '%s dbname=%s\n' "$dsn" "$db"
	fi
}

psql_cmd() {
	if [[ -n "$PG_BIN" && -x "$PG_BIN/psql" ]]; then
		"$PG_BIN/psql" "$@"
	elif _pg_find_bin 2>/dev/null && [[ -x "$PG_BIN/psql" ]]; then
		"$PG_BIN/psql" "$@"
	else
		psql "$@"
	fi
}

# start_homeserver BACKEND DATADIR [POSTGRES_DSN [IP [NAME=VALUE...]]]: starts a homeserver whose
# client API listens on IP (default 127.0.0.1), with the NAME=VALUE pairs added to its environment;
# sets HS_PID, HS_PORT, HS_LOG.
start_homeserver() {
	local backend="$1" data="$2" dsn="${3:-}" ip="${4:-127.0.0.1}" attempt i kv
	local -a extra=("${@:5}")
	HS_LOG="$WORK/homeserver-$backend-$ip.log"
	for ((attempt = 1; attempt <= 3; attempt++)); do
		HS_PORT="$(pg_free_port)" || return 1
		note "starting homeserver ($backend) on $ip:$HS_PORT, data in $data"
		# Run from the data dir, so anything the server writes relative to the working directory lands there.
		(
			cd "$data"
			export HS_SERVER_NAME=localhost HS_DATA_DIR="$data" \
				HS_LISTEN_CLIENT="$ip:$HS_PORT" HS_REGISTRATION_ENABLED=true \
				HS_REGISTRATION_SHARED_SECRET="$E2E_SECRET" HS_RATE_LIMITS_ENABLED=false \
				HS_DATABASE_BACKEND="$backend" HS_PRESENCE_IDLE_TIMEOUT="$E2E_PRESENCE_IDLE_TIMEOUT" \
				HS_PRESENCE_OFFLINE_TIMEOUT="$E2E_PRESENCE_OFFLINE_TIMEOUT"
			if [[ -n "$dsn" ]]; then export HS_DATABASE_POSTGRES_DSN="$dsn"; fi
			for kv in "${extra[@]}"; do export "${kv?}"; done
			exec "$WORK/homeserver" run
		) >"$HS_LOG" 2>&1 </dev/null &
		HS_PID=$!
		for ((i = 0; i < 120; i++)); do
			if curl -fsS --max-time 2 -o /dev/null "http://$ip:$HS_PORT/_matrix/client/versions" 2>/dev/null; then
				note "homeserver is up (pid $HS_PID)"
				return 0
			fi
			kill -0 "$HS_PID" 2>/dev/null || break
			sleep 0.5
		done
		if kill -0 "$HS_PID" 2>/dev/null; then
			note "homeserver did not answer /_matrix/client/versions within 60s; its log:"
			cat "$HS_LOG"
			stop_homeserver
			return 1
		fi
		wait "$HS_PID" 2>/dev/null
		note "homeserver exited with status $? during start-up"
		HS_PID=""
		if grep -qi 'address already in use' "$HS_LOG" && ((attempt < 3)); then
			note "port $HS_PORT was taken; retrying"
			continue
		fi
		note "homeserver log:"
		cat "$HS_LOG"
		return 1
	done
	return 1
}

stop_homeserver() {
	[[ -n "$HS_PID" ]] || return 0
	stop_pid "$HS_PID"
	HS_PID=""
}

# stop_pid PID: SIGTERM, then SIGKILL after 20 s.
stop_pid() {
	local pid="$1" i
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 200; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		note "homeserver $pid did not stop within 20s after SIGTERM; killing it"
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
}

# create_e2e_db: creates a PostgreSQL database for an e2e server; prints its name.
create_e2e_db() {
	local db="e2e_$$_${RANDOM}"
	psql_cmd "$HS_TEST_POSTGRES_DSN" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $db" </dev/null || return 1
	printf '%s\n' "$db"
}

drop_e2e_db() {
	psql_cmd "$HS_TEST_POSTGRES_DSN" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" </dev/null >/dev/null 2>&1 || true
}

# run_e2e BACKEND TESTFILES...
run_e2e() {
	local backend="$1" data db="" dsn="" rc=0
	shift
	section "e2e: matrix-js-sdk against the homeserver on $backend"
	data="$WORK/e2e-$backend"
	mkdir -p "$data"
	if [[ "$backend" == postgres ]]; then
		if ! db="$(create_e2e_db)"; then
			fail "e2e ($backend): could not create a database"
			return
		fi
		dsn="$(dsn_with_db "$HS_TEST_POSTGRES_DSN" "$db")"
	fi
	if ! start_homeserver "$backend" "$data" "$dsn"; then
		fail "e2e ($backend): homeserver did not start"
	else
		(
			cd scripts/e2e
			export HS_E2E_BASE_URL="http://127.0.0.1:$HS_PORT" HS_E2E_SHARED_SECRET="$E2E_SECRET" \
				HS_E2E_SERVER_NAME=localhost HS_E2E_PRESENCE_IDLE_TIMEOUT="$E2E_PRESENCE_IDLE_TIMEOUT" \
				HS_E2E_PRESENCE_OFFLINE_TIMEOUT="$E2E_PRESENCE_OFFLINE_TIMEOUT" HS_E2E_DATA_DIR="$data"
			# e2ee.test.mjs reads the server's database (sqlite3 on <data>/homeserver.db, or psql).
			if [[ -n "$dsn" ]]; then export HS_E2E_PG_DSN="$dsn"; fi
			if [[ -n "${PG_BIN:-}" ]]; then export PATH="$PATH:$PG_BIN"; fi
			timeout --foreground -k 15s "${HS_E2E_TIMEOUT:-8m}" \
				node --test --test-force-exit --test-concurrency=1 \
				--test-reporter=spec --test-reporter-destination=stdout "$@" </dev/null
		) || rc=$?
		if ((rc == 124)); then note "node tests timed out after ${HS_E2E_TIMEOUT:-8m}"; fi
		if ! kill -0 "$HS_PID" 2>/dev/null; then
			note "the homeserver died during the tests"
			((rc != 0)) || rc=1
		fi
		stop_homeserver
		if ((rc != 0)); then
			fail "e2e ($backend)"
			note "last 200 lines of the homeserver log ($backend):"
			tail -n 200 "$HS_LOG"
		fi
	fi
	if [[ -n "$db" ]]; then drop_e2e_db "$db"; fi
	rm -rf "$data"
}

# run_e2e_federation BACKEND TESTFILES...: two servers on BACKEND, on 127.0.0.1 and 127.0.0.2, each
# named after its federation listener (ip:port) with a certificate from a throwaway CA.
run_e2e_federation() {
	local backend="$1" ca="$WORK/federation-ca" i ip fport data db dsn rc=0 pid
	local -a urls=() names=() dbs=() logs=() datas=()
	shift
	section "e2e: matrix-js-sdk against two federated homeservers on $backend"
	if [[ ! -f "$ca/ca.crt" ]] && ! "$WORK/homeserver" generate-ca "$ca" >/dev/null; then
		fail "e2e federation: homeserver generate-ca"
		return
	fi
	FED_PIDS=()
	for i in 1 2; do
		ip="127.0.0.$i"
		data="$WORK/e2e-federation-$backend-$i"
		mkdir -p "$data"
		datas+=("$data")
		dsn=""
		if [[ "$backend" == postgres ]]; then
			if ! db="$(create_e2e_db)"; then
				fail "e2e federation ($backend): could not create a database"
				rc=1
				break
			fi
			dbs+=("$db")
			dsn="$(dsn_with_db "$HS_TEST_POSTGRES_DSN" "$db")"
		fi
		fport="$(pg_free_port)" || { rc=1 && break; }
		if ! start_homeserver "$backend" "$data" "$dsn" "$ip" HS_SERVER_NAME="$ip:$fport" \
			HS_LISTEN_FEDERATION="$ip:$fport" HS_FEDERATION_TLS_CA_CERT_FILE="$ca/ca.crt" \
			HS_FEDERATION_TLS_CA_KEY_FILE="$ca/ca.key" HS_FEDERATION_TLS_EXTRA_CA_FILES="$ca/ca.crt" \
			HS_FEDERATION_ALLOWED_NETWORKS=127.0.0.0/8; then
			fail "e2e federation ($backend): homeserver $i did not start"
			rc=1
			break
		fi
		FED_PIDS+=("$HS_PID")
		HS_PID=""
		urls+=("http://$ip:$HS_PORT")
		names+=("$ip:$fport")
		logs+=("$HS_LOG")
	done
	if ((rc == 0)); then
		(
			cd scripts/e2e
			export HS_E2E_BASE_URL="${urls[0]}" HS_E2E_SERVER_NAME="${names[0]}" \
				HS_E2E_BASE_URL_2="${urls[1]}" HS_E2E_SERVER_NAME_2="${names[1]}" \
				HS_E2E_SHARED_SECRET="$E2E_SECRET"
			timeout --foreground -k 15s "${HS_E2E_TIMEOUT:-8m}" \
				node --test --test-force-exit --test-concurrency=1 \
				--test-reporter=spec --test-reporter-destination=stdout "$@" </dev/null
		) || rc=$?
		for pid in "${FED_PIDS[@]}"; do
			kill -0 "$pid" 2>/dev/null || { note "homeserver $pid died during the tests" && rc=1; }
		done
		if ((rc != 0)); then fail "e2e federation ($backend)"; fi
	fi
	for pid in "${FED_PIDS[@]}"; do stop_pid "$pid"; done
	FED_PIDS=()
	if ((rc != 0)); then
		for i in "${!logs[@]}"; do
			note "last 100 lines of the log of homeserver $((i + 1)) ($backend):"
			tail -n 100 "${logs[$i]}"
		done
	fi
	for db in "${dbs[@]}"; do drop_e2e_db "$db"; done
	rm -rf "${datas[@]}"
}

# ---------------------------------------------------------------------------------------------

START=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/hs-test.XXXXXX")"

section "environment"
note "$(go version)"
if command -v node >/dev/null 2>&1; then note "node $(node --version), npm $(npm --version 2>/dev/null || echo missing)"; fi
note "user $(id -un), CI=${CI:-}"

section "PostgreSQL"
if [[ -n "${HS_TEST_POSTGRES_DSN:-}" ]]; then
	note "using HS_TEST_POSTGRES_DSN from the environment; not starting a server"
else
	if ! pg_start; then
		fail "PostgreSQL did not start"
		exit 1
	fi
	export HS_TEST_POSTGRES_DSN="$PG_DSN"
fi
note "HS_TEST_POSTGRES_DSN=$HS_TEST_POSTGRES_DSN"

if [[ "${HS_TEST_ONLY_E2E:-}" != 1 ]]; then
	section "gofmt"
	mapfile -t gofiles < <(list_go_files)
	if ((${#gofiles[@]} == 0)); then
		note "no Go files"
	else
		gofmt_rc=0
		unformatted="$(gofmt -l "${gofiles[@]}" 2>&1)" || gofmt_rc=$?
		if [[ -n "$unformatted" || $gofmt_rc -ne 0 ]]; then
			printf '%s\n' "$unformatted"
			note "the files above need gofmt (run: gofmt -w <file>)"
			fail "gofmt"
		else
			note "${#gofiles[@]} files formatted"
		fi
	fi

	section "go vet ./..."
	go vet ./... || fail "go vet"

	section "go test -count=1 -timeout 20m $* ./..."
	go test -count=1 -timeout 20m "$@" ./... || fail "go test"
fi

if [[ "${HS_TEST_SKIP_E2E:-}" == 1 ]]; then
	section "e2e"
	note "skipped (HS_TEST_SKIP_E2E=1)"
elif [[ -f scripts/e2e/package.json ]]; then
	section "e2e: build and npm ci"
	e2e_ready=1
	if [[ ! -d cmd/homeserver ]]; then
		note "cmd/homeserver does not exist"
		e2e_ready=0
	elif ! go build -o "$WORK/homeserver" ./cmd/homeserver; then
		e2e_ready=0
	fi
	((e2e_ready)) || fail "e2e: go build ./cmd/homeserver"
	if ((e2e_ready)); then
		if [[ -f scripts/e2e/package-lock.json ]]; then
			npm_cmd=(npm ci --no-audit --no-fund)
		else
			note "scripts/e2e/package-lock.json is missing; using npm install"
			npm_cmd=(npm install --no-audit --no-fund)
		fi
		if ! (cd scripts/e2e && "${npm_cmd[@]}" </dev/null); then
			fail "e2e: ${npm_cmd[*]}"
			e2e_ready=0
		fi
	fi
	if ((e2e_ready)); then
		mapfile -t e2e_files < <(cd scripts/e2e && find . -name node_modules -prune -o -path ./federation -prune -o -name '*.test.mjs' -type f -print | sort)
		mapfile -t fed_files < <(cd scripts/e2e && find ./federation -name '*.test.mjs' -type f -print 2>/dev/null | sort)
		if ((${#e2e_files[@]} == 0)); then
			note "no *.test.mjs files in scripts/e2e"
			fail "e2e: no test files"
		else
			note "test files: ${e2e_files[*]}"
			for backend in sqlite postgres; do
				run_e2e "$backend" "${e2e_files[@]}"
			done
		fi
		if ((${#fed_files[@]} > 0)); then
			note "federation test files: ${fed_files[*]}"
			for backend in sqlite postgres; do
				run_e2e_federation "$backend" "${fed_files[@]}"
			done
		fi
	fi
else
	section "e2e"
	note "scripts/e2e/package.json does not exist; skipped"
fi

section "summary ($((SECONDS - START))s)"
if ((${#FAILED[@]})); then
	for f in "${FAILED[@]}"; do note "FAILED: $f"; done
	exit 1
fi
note "all passed"
