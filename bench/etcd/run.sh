#!/usr/bin/env bash
# troupe serve against etcd 3.4 (issue 7), same machine, same run, both with
# fsync on. For each system in turn (never both at once: the machine may have
# 2 cores) it starts a 3-member cluster on 127.0.0.1 (free ports, fresh data
# directories), waits until `etcdctl endpoint health` passes, runs
#   kvbench --mode seq-put            (one client, one put at a time)
#   kvbench --mode put --clients N    (N clients, puts on distinct keys)
#   kvbench --mode get --clients N    (N clients, linearizable gets)
# stops the cluster, and finally prints a Markdown table with troupe/etcd
# ratios. The raw JSON lines go to the results file.
#
# Each system runs with its defaults but for one setting: three members share
# the machine's cores, so every troupe member runs its tasks on one thread
# (`--worker-threads 1`; the log writer has its own). etcd was measured with
# the same restriction (GOMAXPROCS=1) and was no faster (64-client put 3.6k
# and 4.6k/s against 3.9k and 4.7k/s with its default), so it keeps it.
#
# Usage: run.sh [--seconds S (10)] [--clients N (64)] [--value-size B (256)]
#               [--out FILE] [--no-build] [--keep] [--perf]
#               [--systems "etcd troupe"] [--troupe-args "ARGS"]
#               [--quiet-wait S (120)] [--troupe-bin PATH] [--rounds R (1)]
#   --out FILE   where the JSON lines go
#                [default: bench/etcd/results/<UTC time>.jsonl]
#   --keep       keep the temporary directory (logs, data dirs)
#   --perf       record `perf record -g` of one troupe member during the
#                N-client put run (perf.data kept in the temporary directory;
#                PERF_CALLGRAPH="--call-graph dwarf" for stacks through Rust)
#   --systems    which systems, in this order (diagnostics; the table wants both)
#   --troupe-args  extra flags for every `troupe serve` (diagnostics only:
#                the comparison is meant with defaults)
#   --troupe-bin PATH  run this troupe binary instead of target/release/troupe
#                (e.g. one built from a clean checkout: the working tree is
#                shared, and target/release/troupe is whatever was built last)
#   --rounds R   run both systems R times, alternating which goes first;
#                the table gives each round's ratios and their median. This
#                machine's speed drifts by tens of percent within minutes,
#                so one round's ratio can be far from the next one's.
#   --quiet-wait S  before each system, wait up to S seconds until the
#                machine is idle (CPU busy < 30% over 1 s); the busy figure
#                seen at the start is printed either way
# Needs root to install etcd-server, etcd-client and jq when they are missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
readonly HERE ROOT
TROUPE="$ROOT/target/release/troupe"
readonly KVBENCH="$ROOT/target/release/examples/kvbench"
readonly BUILD_TRIES=3
readonly BUILD_RETRY_WAIT=60
readonly BUILD_TIMEOUT=1800
readonly HEALTH_TIMEOUT=60
readonly STOP_TIMEOUT=10

secs=10
clients=64
value_size=256
out=""
build=1
keep=0
perf=0
systems="etcd troupe"
troupe_args=""
quiet_wait=120
rounds=1
round=1
readonly QUIET_BUSY=30

say() { echo "run.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }
usage() {
	sed -n '/^# Usage:/,/^# Needs root/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

while (($#)); do
	case "$1" in
	--seconds) secs=${2:?--seconds needs a value}; shift 2 ;;
	--clients) clients=${2:?--clients needs a value}; shift 2 ;;
	--value-size) value_size=${2:?--value-size needs a value}; shift 2 ;;
	--out) out=${2:?--out needs a value}; shift 2 ;;
	--no-build) build=0; shift ;;
	--keep) keep=1; shift ;;
	--perf) perf=1; shift ;;
	--systems) systems=${2:?--systems needs a value}; shift 2 ;;
	--troupe-args) troupe_args=${2?--troupe-args needs a value}; shift 2 ;;
	--troupe-bin) TROUPE=${2:?--troupe-bin needs a value}; shift 2 ;;
	--rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
	--quiet-wait) quiet_wait=${2:?--quiet-wait needs a value}; shift 2 ;;
	-h | --help) usage ;;
	*) say "unknown argument: $1"; usage ;;
	esac
done
[[ $secs =~ ^[0-9]+$ ]] && ((secs >= 1 && secs <= 600)) || die "--seconds must be 1..600"
[[ $clients =~ ^[0-9]+$ ]] && ((clients >= 1 && clients <= 4096)) || die "--clients must be 1..4096"
[[ $quiet_wait =~ ^[0-9]+$ ]] && ((quiet_wait <= 3600)) || die "--quiet-wait must be 0..3600"
[[ $rounds =~ ^[0-9]+$ ]] && ((rounds >= 1 && rounds <= 50)) || die "--rounds must be 1..50"
for s in $systems; do [[ $s == etcd || $s == troupe ]] || die "unknown system: $s"; done
[[ $value_size =~ ^[0-9]+$ ]] && ((value_size <= 1048576)) || die "--value-size must be 0..1048576"

# --- tools -----------------------------------------------------------------

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v jq >/dev/null || need+=(jq)
if ((${#need[@]})); then
	((EUID == 0)) || die "needs root to install ${need[*]}"
	say "installing ${need[*]}"
	timeout 600 apt-get update -qq
	DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "${need[@]}" >&2
fi
# The Debian package may have started its own etcd on 2379; our ports are
# chosen free, so it does not collide, but it would share the CPUs.
if pgrep -x etcd >/dev/null; then
	say "warning: an etcd is already running (pid $(pgrep -x etcd | tr '\n' ' ')); it competes for the CPUs"
fi
etcd_version=$(etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p')
[[ $etcd_version == 3.4.* ]] || say "warning: etcd is $etcd_version, not 3.4"
export ETCDCTL_API=3

if ((build)); then
	for ((try = 1; ; try++)); do
		say "building troupe and kvbench (try $try)"
		if (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release -q &&
			timeout "$BUILD_TIMEOUT" cargo build --release -q -p troupe-cli --example kvbench); then
			break
		fi
		((try < BUILD_TRIES)) || die "build failed $try times"
		say "build failed (maybe a concurrent edit); retrying in ${BUILD_RETRY_WAIT}s"
		sleep "$BUILD_RETRY_WAIT"
	done
fi
[[ -x $TROUPE ]] || die "$TROUPE missing (build first)"
TROUPE="$(cd "$(dirname "$TROUPE")" && pwd)/$(basename "$TROUPE")"
[[ -x $KVBENCH ]] || die "$KVBENCH missing (build first)"

# --- state and cleanup -----------------------------------------------------

TMP=$(mktemp -d /tmp/troupe-etcd-bench.XXXXXX)
readonly TMP
if [[ -z $out ]]; then
	mkdir -p "$HERE/results"
	out="$HERE/results/$(date -u +%Y%m%dT%H%M%SZ).jsonl"
fi
: >"$out"
pids=()
perf_pid=""
failed=1

stop_cluster() {
	local p deadline
	if [[ -n $perf_pid ]]; then
		kill -INT "$perf_pid" 2>/dev/null || true
		wait "$perf_pid" 2>/dev/null || true
		perf_pid=""
	fi
	((${#pids[@]})) || return 0
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	deadline=$((SECONDS + STOP_TIMEOUT))
	for p in "${pids[@]}"; do
		while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
		if kill -0 "$p" 2>/dev/null; then
			say "pid $p ignored SIGTERM for ${STOP_TIMEOUT}s; SIGKILL"
			kill -KILL "$p" 2>/dev/null || true
		fi
		wait "$p" 2>/dev/null || true
	done
	pids=()
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_cluster
	if ((keep || failed || perf)); then
		say "kept $TMP (logs and data)"
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port no socket uses (and that we have not handed out in this run),
# below the kernel's ephemeral range: a port that a client connection of the
# previous system (or one in TIME_WAIT) holds cannot be bound by a listener.
declare -A used_ports=()
read -r ephemeral_lo _ </proc/sys/net/ipv4/ip_local_port_range
readonly PORT_LO=20000
readonly PORT_SPAN=$((ephemeral_lo > PORT_LO + 1000 ? ephemeral_lo - PORT_LO : 10000))
free_port() {
	local p i
	for ((i = 0; i < 200; i++)); do
		p=$((PORT_LO + RANDOM % PORT_SPAN))
		[[ -z ${used_ports[$p]:-} ]] || continue
		if ! ss -Htan "sport = :$p" | grep -q .; then
			used_ports[$p]=1
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

# --- one system ------------------------------------------------------------

# start_cluster SYSTEM: sets client_eps (host:port,...) and pids.
start_cluster() {
	local sys=$1 i name cluster="" dir
	local -a cport pport
	for i in 1 2 3; do
		cport[i]=$(free_port) || die "no free port"
		pport[i]=$(free_port) || die "no free port"
		cluster+="${cluster:+,}m$i=http://127.0.0.1:${pport[i]}"
	done
	client_eps=""
	for i in 1 2 3; do
		client_eps+="${client_eps:+,}127.0.0.1:${cport[i]}"
	done
	for i in 1 2 3; do
		name=m$i
		dir="$TMP/$sys/r$round/$name"
		mkdir -p "$dir"
		local -a flags=(
			--name "$name" --data-dir "$dir/data"
			--listen-client-urls "http://127.0.0.1:${cport[i]}"
			--advertise-client-urls "http://127.0.0.1:${cport[i]}"
			--listen-peer-urls "http://127.0.0.1:${pport[i]}"
			--initial-advertise-peer-urls "http://127.0.0.1:${pport[i]}"
			--initial-cluster "$cluster"
			--initial-cluster-state new
		)
		# shellcheck disable=SC2086 # troupe_args is a list of flags
		case $sys in
		etcd) etcd "${flags[@]}" --initial-cluster-token "bench-$$" --logger zap \
			>"$dir/log" 2>&1 &
			;;
		troupe) "$TROUPE" serve "${flags[@]}" --insecure-plaintext --worker-threads 1 $troupe_args >"$dir/log" 2>&1 & ;;
		esac
		pids+=($!)
	done
	say "$sys: members at $client_eps (pids ${pids[*]})"
	local deadline=$((SECONDS + HEALTH_TIMEOUT)) p
	while :; do
		for p in "${pids[@]}"; do
			kill -0 "$p" 2>/dev/null || die "$sys member $p exited; see $TMP/$sys/r$round/*/log"
		done
		if timeout 10 etcdctl --endpoints="$client_eps" --command-timeout=3s \
			endpoint health >/dev/null 2>&1; then
			break
		fi
		((SECONDS < deadline)) || die "$sys not healthy after ${HEALTH_TIMEOUT}s; see $TMP/$sys/r$round/*/log"
		sleep 0.5
	done
	timeout 10 etcdctl --endpoints="$client_eps" endpoint health >&2
}

# bench SYSTEM MODE: runs kvbench, appends its JSON line to $out.
bench() {
	local sys=$1 mode=$2 line
	# Warm-up 1 s, prefill (get), connection set-up: bounded generously.
	local limit=$((secs + 180))
	say "$sys: $mode"
	line=$(timeout "$limit" "$KVBENCH" --endpoints "$client_eps" --mode "$mode" \
		--clients "$clients" --seconds "$secs" --value-size "$value_size" \
		--system "$sys" --json) || die "$sys $mode: kvbench failed"
	jq -c --argjson r "$round" '. + {round: $r}' <<<"$line" >>"$out"
}

# Percent of CPU time busy over one second, all cores.
cpu_busy() {
	local a b
	read -r -a a < <(head -1 /proc/stat)
	sleep 1
	read -r -a b < <(head -1 /proc/stat)
	local i tot=0 idle
	for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
	idle=$((b[4] - a[4] + b[5] - a[5]))
	((tot > 0)) || { echo 0; return; }
	echo $(((tot - idle) * 100 / tot))
}

wait_quiet() {
	local sys=$1 busy deadline=$((SECONDS + quiet_wait))
	busy=$(cpu_busy)
	while ((busy >= QUIET_BUSY && SECONDS < deadline)); do
		sleep 4
		busy=$(cpu_busy)
	done
	if ((busy >= QUIET_BUSY)); then
		say "warning: machine still ${busy}% busy before $sys (other work competes; figures are low)"
	fi
	say "$sys: machine ${busy}% busy before start, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "{\"system\":\"$sys\",\"mode\":\"machine\",\"round\":$round,\"busy_pct_before\":$busy,\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$out"
}

run_system() {
	local sys=$1
	wait_quiet "$sys"
	start_cluster "$sys"
	bench "$sys" seq-put
	if ((perf)) && [[ $sys == troupe ]]; then
		# Record the member the first client (and every third) talks to,
		# starting after the warm-up, for the measured window.
		(sleep 2; exec perf record ${PERF_CALLGRAPH:--g} -o "$TMP/perf.data" -p "${pids[0]}" -- sleep "$((secs - 2))") \
			>"$TMP/perf.log" 2>&1 &
		perf_pid=$!
	fi
	bench "$sys" put
	if [[ -n $perf_pid ]]; then
		wait "$perf_pid" 2>/dev/null || true
		perf_pid=""
		say "perf data: $TMP/perf.data (perf report -i $TMP/perf.data --no-children)"
	fi
	bench "$sys" get
	du -sh "$TMP/$sys/r$round" >&2 || true
	stop_cluster
	# Each round starts a fresh cluster; the logs stay.
	((keep)) || rm -rf "$TMP/$sys/r$round"/*/data
}

date_utc=$(date -u '+%Y-%m-%d %H:%M UTC')
troupe_rev="$TROUPE, sha256 $(sha256sum "$TROUPE" | cut -c1-12), built $(date -u -r "$TROUPE" '+%H:%M UTC')"
if [[ $TROUPE == "$ROOT/target/release/troupe" ]]; then
	troupe_rev+=", tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
	if [[ -n $(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null) ]]; then
		troupe_rev+=" with uncommitted changes under crates/"
	fi
fi
say "results to $out"
first=1
for ((round = 1; round <= rounds; round++)); do
	order=$systems
	if ((round % 2 == 0)); then
		order=$(tr ' ' '\n' <<<"$systems" | tac | paste -sd' ')
	fi
	for sys in $order; do
		((first)) || sleep 3 # let the page cache flush settle before the next system
		first=0
		run_system "$sys"
	done
done

# --- table -----------------------------------------------------------------

cpus=$(nproc)
cpu_model=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
echo
echo "$date_utc, $cpus cores ($cpu_model), etcd $etcd_version, troupe ($troupe_rev), $secs s per mode, value $value_size B, 3 members on 127.0.0.1, fsync on${troupe_args:+, troupe serve $troupe_args}"
echo
jq -rs --argjson n "$clients" '
	def get(s; m; k): (map(select(.system == s and .mode == m and (.round // 1) == k)) | first) // {};
	def n(x): if x == null then "-" else (x | round | tostring) end;
	def ratio(a; b): if (a // 0) > 0 and (b // 0) > 0 then a / b else null end;
	def x(v): if v == null then "-" else ((v * 100 | round) / 100 | tostring) + "x" end;
	def median: map(select(. != null)) | sort | if length == 0 then null
	  elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
	(map(.round // 1) | unique) as $rounds |
	(map(select(.mode == "machine")) | map("round \(.round // 1) \(.system): \(.busy_pct_before)% CPU busy before start (load \(.loadavg))") | join("; ")),
	"",
	"| round | system | seq put p50 (us) | seq put p99 (us) | seq put ops/s | \($n)-client put ops/s | \($n)-client put p99 (us) | \($n)-client get ops/s | \($n)-client get p99 (us) | errors |",
	"|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
	( $rounds[] as $k |
	  (get("etcd"; "seq-put"; $k)) as $es | (get("etcd"; "put"; $k)) as $ep | (get("etcd"; "get"; $k)) as $eg |
	  (get("troupe"; "seq-put"; $k)) as $ts | (get("troupe"; "put"; $k)) as $tp | (get("troupe"; "get"; $k)) as $tg |
	  ( ["etcd", $es, $ep, $eg], ["troupe", $ts, $tp, $tg] | . as [$name, $s, $p, $g] |
	    "| \($k) | \($name) | \(n($s.p50_us)) | \(n($s.p99_us)) | \(n($s.ops_per_sec)) | \(n($p.ops_per_sec)) | \(n($p.p99_us)) | \(n($g.ops_per_sec)) | \(n($g.p99_us)) | \(($s.errors // 0) + ($p.errors // 0) + ($g.errors // 0)) |" ),
	  "| \($k) | troupe/etcd | \(x(ratio($ts.p50_us; $es.p50_us))) | \(x(ratio($ts.p99_us; $es.p99_us))) | \(x(ratio($ts.ops_per_sec; $es.ops_per_sec))) | \(x(ratio($tp.ops_per_sec; $ep.ops_per_sec))) | \(x(ratio($tp.p99_us; $ep.p99_us))) | \(x(ratio($tg.ops_per_sec; $eg.ops_per_sec))) | \(x(ratio($tg.p99_us; $eg.p99_us))) | |" ) ,
	( [ $rounds[] as $k | ratio(get("troupe"; "put"; $k).ops_per_sec; get("etcd"; "put"; $k).ops_per_sec) ] | median ) as $put |
	( [ $rounds[] as $k | ratio(get("troupe"; "seq-put"; $k).p50_us; get("etcd"; "seq-put"; $k).p50_us) ] | median ) as $seq |
	( [ $rounds[] as $k | ratio(get("troupe"; "get"; $k).ops_per_sec; get("etcd"; "get"; $k).ops_per_sec) ] | median ) as $get |
	"",
	(if ($rounds | length) > 1 then "Median over \($rounds | length) rounds: \($n)-client put \(x($put)), seq put p50 \(x($seq)), \($n)-client get \(x($get))." else empty end),
	"Target (issue 7): \($n)-client put ratio >= 2x: " + (if $put != null and $put >= 2 then "met" else "NOT met" end)
	  + "; seq put p50 ratio <= 1x: " + (if $seq != null and $seq <= 1 then "met" else "NOT met" end)
	  + (if ($rounds | length) > 1 then " (medians)." else "." end)
' "$out"
echo
say "raw results: $out"
failed=0
