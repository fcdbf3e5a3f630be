#!/usr/bin/env bash
# Corosync CPG side of troupe's benchmark comparison (issue 6).
#
# Runs three Corosync nodes on this machine, each in its own network
# namespace (veth pairs into a bridge in a hub namespace) and its own mount
# namespace (private /run and /dev/shm, its own state_dir), waits until they
# form one membership, then runs cpgbench in each node's namespaces: every
# member joins one CPG group and multicasts with CPG_TYPE_AGREED. The last
# line of output is one JSON object with the fields `troupe bench --json`
# prints (ordering, members, size, senders, msgs_per_sec, mb_per_sec,
# p50_us, p99_us, ...) plus "system": "corosync" and its version.
#
# Usage: run.sh [--size N] [--seconds S] [--senders all|one]
#               [--transport knet|udpu] [--sched-rr yes|no] [--keep] [--verbose]
# Needs root. Installs corosync, libcpg-dev, gcc and jq with apt-get if missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly MEMBERS=3
readonly WARMUP=1
readonly DRAIN=2
readonly FORM_TIMEOUT=60  # seconds for the ring (and then the CPG group) to form
readonly STOP_TIMEOUT=10  # seconds a process gets after SIGTERM before SIGKILL

size=1024
run_secs=10
senders=all
transport=knet
sched_rr=yes
keep=0
verbose=0

usage() {
	sed -n '/^# Usage:/,/^# Needs root/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

while (($#)); do
	case "$1" in
	--size) size=${2:?--size needs a value}; shift 2 ;;
	--seconds) run_secs=${2:?--seconds needs a value}; shift 2 ;;
	--senders) senders=${2:?--senders needs a value}; shift 2 ;;
	--transport) transport=${2:?--transport needs a value}; shift 2 ;;
	--sched-rr) sched_rr=${2:?--sched-rr needs a value}; shift 2 ;;
	--keep) keep=1; shift ;;
	--verbose) verbose=1; shift ;;
	-h | --help) usage ;;
	*) echo "run.sh: unknown argument: $1" >&2; usage ;;
	esac
done
if ! [[ $size =~ ^[0-9]+$ ]] || ((size < 8 || size > 1048576)); then
	echo "run.sh: --size must be 8..1048576 bytes" >&2
	exit 2
fi
if ! [[ $run_secs =~ ^[0-9]+$ ]] || ((run_secs < 1 || run_secs > 3600)); then
	echo "run.sh: --seconds must be 1..3600" >&2
	exit 2
fi
[[ $senders == all || $senders == one ]] ||
	{ echo "run.sh: --senders must be all or one" >&2; exit 2; }
[[ $transport == knet || $transport == udpu ]] ||
	{ echo "run.sh: --transport must be knet or udpu" >&2; exit 2; }
[[ $sched_rr == yes || $sched_rr == no ]] ||
	{ echo "run.sh: --sched-rr must be yes or no" >&2; exit 2; }

say() { echo "run.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

((EUID == 0)) || die "needs root (network and mount namespaces, apt-get)"

# ---------------------------------------------------------------------------
# Packages.

missing=()
command -v corosync >/dev/null || missing+=(corosync)
[[ -f /usr/include/corosync/cpg.h ]] || missing+=(libcpg-dev)
command -v gcc >/dev/null || missing+=(gcc)
command -v jq >/dev/null || missing+=(jq)
for tool in ip nsenter unshare timeout; do
	command -v "$tool" >/dev/null || die "$tool not found (iproute2 / util-linux / coreutils)"
done
if ((${#missing[@]})); then
	say "installing ${missing[*]} ..."
	timeout 600 apt-get update -qq >&2 || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive timeout 900 \
		apt-get install -y -qq corosync libcpg-dev gcc jq >&2 || die "apt-get install failed"
fi
version=$(corosync -v | sed -n "s/.*version '\([^']*\)'.*/\1/p")
[[ -n $version ]] || die "cannot read corosync's version from 'corosync -v'"

# ---------------------------------------------------------------------------
# State and cleanup.

work=$(mktemp -d /tmp/troupe-cpgbench.XXXXXX)
tag="tcs$$"
hub="$tag-hub"
nodes=()
for i in $(seq 1 "$MEMBERS"); do nodes+=("$tag-n$i"); done
coro_pids=()
client_pids=()
failed=1

alive() {
	[[ -e /proc/$1 ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

stop_pids() {
	local pid t
	for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "$@"; do
		for ((t = 0; t < STOP_TIMEOUT * 10; t++)); do
			alive "$pid" || break
			sleep 0.1
		done
		if alive "$pid"; then
			say "pid $pid did not stop on SIGTERM; SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	((${#client_pids[@]})) && stop_pids "${client_pids[@]}"
	((${#coro_pids[@]})) && stop_pids "${coro_pids[@]}"
	local ns
	for ns in "${nodes[@]}" "$hub"; do
		if [[ -e /run/netns/$ns ]]; then
			ip netns del "$ns" 2>/dev/null || say "cannot delete namespace $ns"
		fi
	done
	if ((failed || keep)); then
		say "logs kept in $work"
	else
		rm -rf -- "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

show_logs() {
	local f
	for f in "$work"/*.log; do
		[[ -f $f ]] || continue
		say "--- last lines of $f"
		tail -n 20 "$f" >&2 || true
	done
}

# ---------------------------------------------------------------------------
# The client.

gcc -O2 -Wall -o "$work/cpgbench" "$HERE/cpgbench.c" -lcpg ||
	die "cannot compile cpgbench.c (is libcpg-dev installed?)"

# ---------------------------------------------------------------------------
# The network: a hub namespace with a bridge, one veth pair per node.

ip netns add "$hub"
ip -n "$hub" link set lo up
ip -n "$hub" link add br0 type bridge
ip -n "$hub" link set br0 up
addrs=()
for i in $(seq 1 "$MEMBERS"); do
	ns=${nodes[i - 1]}
	addrs+=("10.77.0.$i")
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip -n "$hub" link add "n$i" type veth peer name eth0 netns "$ns"
	ip -n "$hub" link set "n$i" master br0 up
	ip -n "$ns" addr add "10.77.0.$i/24" dev eth0
	ip -n "$ns" link set eth0 up
done
# ---------------------------------------------------------------------------
# Corosync, one per namespace.

for i in $(seq 1 "$MEMBERS"); do
	dir="$work/node$i"
	mkdir -p "$dir/state"
	sed -e "s|@NODE_DIR@|$dir|g" -e "s|@TRANSPORT@|$transport|g" \
		-e "s|@SCHED_RR@|$sched_rr|g" \
		-e "s|@ADDR1@|${addrs[0]}|g" -e "s|@ADDR2@|${addrs[1]}|g" -e "s|@ADDR3@|${addrs[2]}|g" \
		"$HERE/corosync.conf.in" >"$dir/corosync.conf"
	# ip netns exec and unshare exec in place: $! is corosync's pid. The
	# private /run holds corosync.pid (a lock: one per machine otherwise);
	# the private /dev/shm holds libqb's IPC rings.
	# shellcheck disable=SC2016 # $1 is expanded by the inner sh
	ip netns exec "${nodes[i - 1]}" unshare --mount --propagation private \
		sh -c 'mount -t tmpfs -o mode=0755 tmpfs /run &&
		       mount -t tmpfs -o mode=1777 tmpfs /dev/shm &&
		       exec corosync -f -c "$1"' sh "$dir/corosync.conf" \
		>"$work/corosync$i.log" 2>&1 </dev/null &
	coro_pids+=("$!")
done

# In node i's network and mount namespaces.
in_node() {
	local i=$1
	shift
	nsenter -t "${coro_pids[i - 1]}" -m -n -- "$@"
}

say "corosync $version ($transport): waiting for the 3-node membership ..."
formed=0
for ((t = 0; t < FORM_TIMEOUT * 2; t++)); do
	for i in $(seq 1 "$MEMBERS"); do
		alive "${coro_pids[i - 1]}" || { show_logs; die "corosync on node $i exited"; }
	done
	ok=0
	for i in $(seq 1 "$MEMBERS"); do
		out=$(timeout 5 nsenter -t "${coro_pids[i - 1]}" -m -n -- corosync-quorumtool -s 2>/dev/null) || true
		if grep -Eq '^Quorate:[[:space:]]+Yes' <<<"$out" &&
			grep -Eq '^Total votes:[[:space:]]+3$' <<<"$out"; then
			ok=$((ok + 1))
		fi
	done
	if ((ok == MEMBERS)); then
		formed=1
		break
	fi
	sleep 0.5
done
((formed)) || { show_logs; die "the 3 nodes did not form one quorate membership within ${FORM_TIMEOUT} s"; }
((verbose)) && in_node 1 corosync-quorumtool -s >&2
say "membership formed: 3 nodes, quorate"

# ---------------------------------------------------------------------------
# The clients.

say "cpgbench: ${size} B, senders $senders, ${WARMUP} s warm-up + ${run_secs} s"
client_limit=$((FORM_TIMEOUT + WARMUP + run_secs + DRAIN + 30))
for i in $(seq 1 "$MEMBERS"); do
	timeout "$client_limit" nsenter -t "${coro_pids[i - 1]}" -m -n -- \
		"$work/cpgbench" --size "$size" --seconds "$run_secs" --senders "$senders" \
		--index "$((i - 1))" --members "$MEMBERS" --warmup "$WARMUP" \
		--drain "$DRAIN" --form-timeout "$FORM_TIMEOUT" \
		>"$work/client$i.json" 2>"$work/client$i.log" </dev/null &
	client_pids+=("$!")
done
bad=0
for i in $(seq 1 "$MEMBERS"); do
	if ! wait "${client_pids[i - 1]}"; then
		say "cpgbench on node $i failed (exit status $?)"
		bad=1
	fi
done
client_pids=()
((bad)) && { show_logs; die "a client failed"; }
for i in $(seq 1 "$MEMBERS"); do
	jq -e .delivered "$work/client$i.json" >/dev/null 2>&1 ||
		{ show_logs; die "client $i printed no result"; }
done

# ---------------------------------------------------------------------------
# The figures: as troupe bench computes them (mean over members of each
# member's deliveries per second; quantiles of the members' merged histograms).

result=$(jq -s -c --arg version "$version" --arg transport "$transport" --arg sched_rr "$sched_rr" \
	--argjson size "$size" --arg senders "$senders" --argjson seconds "$run_secs" \
	--argjson warmup "$WARMUP" '
	def quantile($h; $q):
		($h | map(.[1]) | add // 0) as $n
		| if $n == 0 then 0 else
			([($q * $n | ceil), 1] | max) as $k
			| [foreach $h[] as $b (0; . + $b[1]; [$b[0], .])]
			| map(select(.[1] >= $k)) | .[0][0] / 1000
		  end;
	([.[].hist[]] | group_by(.[0]) | map([.[0][0], (map(.[1]) | add)])) as $h
	| (map(.msgs_per_sec) | add / length) as $rate
	| {
		system: "corosync",
		version: $version,
		transport: $transport,
		sched_rr: $sched_rr,
		ordering: "total",
		cpg_type: "CPG_TYPE_AGREED",
		members: length,
		size: $size,
		senders: $senders,
		seconds: $seconds,
		warmup_seconds: $warmup,
		msgs_per_sec: $rate,
		mb_per_sec: ($rate * $size / 1e6),
		per_member_msgs_per_sec: map(.msgs_per_sec),
		p50_us: quantile($h; 0.5),
		p99_us: quantile($h; 0.99),
		p999_us: quantile($h; 0.999),
		own_p50_us: map(.own_p50_us),
		own_p99_us: map(.own_p99_us),
		sent: (map(.sent) | add),
		try_again: (map(.try_again) | add)
	}' "$work"/client*.json) || die "cannot merge the clients' results"

failed=0
jq -r '"run.sh: corosync \(.version) \(.transport), \(.size) B, senders \(.senders): " +
	"\(.msgs_per_sec | floor) msgs/s/member, \(.mb_per_sec * 100 | floor / 100) MB/s, " +
	"p50 \(.p50_us) us, p99 \(.p99_us) us"' <<<"$result" >&2
echo "$result"
