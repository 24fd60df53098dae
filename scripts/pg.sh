#!/usr/bin/env bash
# Throwaway PostgreSQL for tests.
#
# Sourced (by scripts/test.sh, or by hand):
#     source scripts/pg.sh
#     pg_start            # starts a server; sets PG_PORT, PG_DSN, PG_BIN, PG_TMP
#     ...
#     pg_stop             # stops it and removes its temp dir (safe to call twice)
#   The caller is responsible for calling pg_stop (e.g. from a trap on EXIT).
#
# Run directly:
#     scripts/pg.sh [PORT]
#   starts a server (on PORT, or a free port), prints
#     export HS_TEST_POSTGRES_DSN=postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
#   and keeps it running until Ctrl-C, then removes everything.
#
# The server listens on 127.0.0.1 only, its unix socket is in the temp dir, auth is trust,
# durability is off (fsync, synchronous_commit, full_page_writes) and max_connections=300.
# When run as root, initdb/postgres run as the `postgres` system user (created if missing).
# PG_BIN may be set to choose the binaries; default /usr/lib/postgresql/15/bin, else the
# newest /usr/lib/postgresql/*/bin (as root, the package is installed with apt-get if missing).
#
# This file does not change the caller's shell options; functions return non-zero on failure.

PG_PORT="${PG_PORT:-}"
PG_DSN="${PG_DSN:-}"
PG_TMP="${PG_TMP:-}"
PG_BIN="${PG_BIN:-}"

_pg_log() { printf '[pg] %s\n' "$*" >&2; }

# _pg_find_bin: sets PG_BIN to a directory holding initdb, pg_ctl and postgres.
_pg_find_bin() {
	local d
	if [[ -n "$PG_BIN" ]]; then
		[[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] && return 0
		_pg_log "PG_BIN=$PG_BIN does not contain initdb and pg_ctl"
		return 1
	fi
	if [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
		PG_BIN=/usr/lib/postgresql/15/bin
		return 0
	fi
	# Newest installed major version.
	while IFS= read -r d; do
		if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
			PG_BIN="$d"
			return 0
		fi
	done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k4,4 -n -r)
	return 1
}

# pg_find_bin: like _pg_find_bin, but installs PostgreSQL with apt-get when running as root.
pg_find_bin() {
	_pg_find_bin && return 0
	if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
		_pg_log "PostgreSQL server binaries not found; installing with apt-get"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >&2 || true
		apt-get install -y -qq postgresql-15 >&2 </dev/null ||
			apt-get install -y -qq postgresql >&2 </dev/null || true
		_pg_find_bin && return 0
	fi
	_pg_log "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin); install postgresql-15 or set PG_BIN"
	return 1
}

# _pg_as_owner CMD ARGS...: run a command as the user that owns the cluster
# (postgres when we are root, ourselves otherwise), from / so an unreadable cwd does not matter.
_pg_as_owner() {
	if [[ $EUID -ne 0 ]]; then
		"$@"
		return
	fi
	if command -v runuser >/dev/null 2>&1; then
		(cd / && runuser -u postgres -- "$@")
	else
		local cmd
		cmd="$(printf '%q ' "$@")"
		(cd / && su postgres -s /bin/bash -c "$cmd")
	fi
}

_pg_ensure_user() {
	[[ $EUID -eq 0 ]] || return 0
	getent passwd postgres >/dev/null 2>&1 && return 0
	_pg_log "creating system user postgres"
	useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home \
		--shell /bin/bash postgres >&2 || {
		_pg_log "useradd postgres failed"
		return 1
	}
}

# pg_free_port: prints a TCP port on 127.0.0.1 that is free right now.
pg_free_port() {
	local p i
	if command -v python3 >/dev/null 2>&1 &&
		p="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null)" &&
		[[ -n "$p" ]]; then
		echo "$p"
		return 0
	fi
	if command -v node >/dev/null 2>&1 &&
		p="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})' 2>/dev/null)" &&
		[[ -n "$p" ]]; then
		echo "$p"
		return 0
	fi
	# Fallback: random ports, skipping ones something answers on.
	for ((i = 0; i < 100; i++)); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# pg_start [PORT]: start a throwaway server. Sets PG_PORT, PG_DSN, PG_TMP, PG_BIN.
pg_start() {
	local want_port="${1:-}" attempt port tmp
	if [[ -n "$PG_TMP" && -d "$PG_TMP" ]]; then
		_pg_log "a server from this shell is already running (PG_TMP=$PG_TMP); call pg_stop first"
		return 1
	fi
	pg_find_bin || return 1
	_pg_ensure_user || return 1

	tmp="$(mktemp -d "${TMPDIR:-/tmp}/hs-pg.XXXXXX")" || return 1
	PG_TMP="$tmp"
	if [[ $EUID -eq 0 ]]; then
		chown postgres: "$PG_TMP" || return 1
		chmod 0700 "$PG_TMP"
		# TMPDIR may be somewhere postgres cannot reach (e.g. under /root); fall back to /tmp.
		if ! _pg_as_owner test -w "$PG_TMP"; then
			rm -rf "$PG_TMP"
			tmp="$(mktemp -d /tmp/hs-pg.XXXXXX)" || return 1
			PG_TMP="$tmp"
			chown postgres: "$PG_TMP" || return 1
			chmod 0700 "$PG_TMP"
		fi
	fi

	_pg_log "initdb in $PG_TMP/data ($PG_BIN)"
	if ! _pg_as_owner "$PG_BIN/initdb" -D "$PG_TMP/data" -U postgres --auth=trust \
		--encoding=UTF8 --locale=C --no-sync >"$PG_TMP/initdb.log" 2>&1; then
		cat "$PG_TMP/initdb.log" >&2
		_pg_log "initdb failed"
		return 1
	fi

	# shellcheck disable=SC2016 # $1 is expanded by the inner sh.
	# Settings; the port is given on the command line so a retry can change it.
	_pg_as_owner /bin/sh -c 'cat >>"$1/data/postgresql.conf"' sh "$PG_TMP" <<EOF || return 1

# --- throwaway test server (scripts/pg.sh) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_TMP'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
# Parallel query workers use /dev/shm, which is tiny in many containers.
dynamic_shared_memory_type = mmap
log_min_messages = warning
log_line_prefix = '%m [%p] '
EOF
	# shellcheck disable=SC2016
	_pg_as_owner /bin/sh -c 'cat >"$1/data/pg_hba.conf"' sh "$PG_TMP" <<'EOF' || return 1
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   trust
EOF

	for ((attempt = 1; attempt <= 5; attempt++)); do
		if [[ -n "$want_port" ]]; then
			port="$want_port"
		else
			port="$(pg_free_port)" || {
				_pg_log "could not find a free port"
				return 1
			}
		fi
		_pg_log "starting postgres on 127.0.0.1:$port"
		: >"$PG_TMP/postgres.log"
		[[ $EUID -eq 0 ]] && chown postgres: "$PG_TMP/postgres.log"
		if _pg_as_owner "$PG_BIN/pg_ctl" start -D "$PG_TMP/data" -l "$PG_TMP/postgres.log" \
			-o "-p $port" -w -t 60 -s </dev/null >"$PG_TMP/pg_ctl.log" 2>&1; then
			PG_PORT="$port"
			break
		fi
		if [[ -z "$want_port" ]] && grep -qi 'could not bind\|address already in use\|could not create any TCP/IP sockets' "$PG_TMP/postgres.log"; then
			_pg_log "port $port was taken; retrying"
			continue
		fi
		cat "$PG_TMP/pg_ctl.log" "$PG_TMP/postgres.log" >&2
		_pg_log "postgres failed to start"
		return 1
	done
	if [[ -z "$PG_PORT" ]]; then
		_pg_log "postgres failed to start after $((attempt - 1)) attempts"
		return 1
	fi

	# pg_ctl -w already waited for "ready"; also confirm TCP connections work.
	local i
	for ((i = 0; i < 60; i++)); do
		if [[ -x "$PG_BIN/pg_isready" ]]; then
			"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres && break
		elif (exec 3<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null; then
			break
		fi
		sleep 0.5
	done
	if ((i >= 60)); then
		cat "$PG_TMP/postgres.log" >&2
		_pg_log "postgres does not accept connections on 127.0.0.1:$PG_PORT"
		return 1
	fi
	PG_DSN="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
	export PG_PORT PG_DSN
	_pg_log "ready: $PG_DSN"
}

# pg_stop: stop the server started by pg_start and remove its temp dir. Idempotent.
pg_stop() {
	[[ -n "$PG_TMP" ]] || return 0
	if [[ -f "$PG_TMP/data/postmaster.pid" ]]; then
		local pid
		pid="$(head -n 1 "$PG_TMP/data/postmaster.pid" 2>/dev/null)"
		if ! _pg_as_owner "$PG_BIN/pg_ctl" stop -D "$PG_TMP/data" -m fast -w -t 20 -s \
			</dev/null >/dev/null 2>&1; then
			_pg_as_owner "$PG_BIN/pg_ctl" stop -D "$PG_TMP/data" -m immediate -w -t 10 -s \
				</dev/null >/dev/null 2>&1 ||
				{ [[ "$pid" =~ ^[0-9]+$ ]] && kill -KILL "$pid" 2>/dev/null; }
		fi
		# Wait for the postmaster to be gone before deleting its files.
		if [[ "$pid" =~ ^[0-9]+$ ]]; then
			local i
			for ((i = 0; i < 50; i++)); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
		fi
	fi
	rm -rf "$PG_TMP"
	PG_TMP=""
	PG_PORT=""
	PG_DSN=""
}

# Run directly: start, print the DSN, wait for Ctrl-C.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	set -uo pipefail
	trap pg_stop EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	pg_start "${1:-}" || exit 1
	echo "export HS_TEST_POSTGRES_DSN='$PG_DSN'"
	echo "# psql -h 127.0.0.1 -p $PG_PORT -U postgres    (Ctrl-C stops the server and deletes its data)" >&2
	pid="$(head -n 1 "$PG_TMP/data/postmaster.pid")"
	while kill -0 "$pid" 2>/dev/null; do
		sleep 1
	done
	_pg_log "postgres exited"
	exit 1
fi
