#!/usr/bin/env bash
# troupe against Corosync (issue 6): builds troupe, then, one after the other
# (never at once: the machine may have 2 cores), runs
#   target/release/troupe bench --members 3 --ordering total --senders all \
#       --size S --seconds N --json
# and bench/corosync/run.sh --size S --seconds N --senders all at each size,
# and prints one Markdown table of both, measured in this run.
#
# Usage: compare.sh [--seconds N (10)] [--sizes "64 1024"] [--no-build]
#                   [--out DIR] [--quiet-wait S (60)]
# Needs root (run.sh uses network and mount namespaces).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
readonly HERE ROOT
readonly TROUPE="$ROOT/target/release/troupe"
readonly BUILD_TRIES=3
readonly BUILD_RETRY_WAIT=60
readonly BUILD_TIMEOUT=1800
readonly QUIET_BUSY=30   # percent CPU busy below which the machine counts as idle

secs=10
sizes="64 1024"
build=1
out=""
quiet_wait=60  # seconds to wait for an idle machine before each run

say() { echo "compare.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
	sed -n '/^# Usage:/,/^# Needs root/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

while (($#)); do
	case "$1" in
	--seconds) secs=${2:?--seconds needs a value}; shift 2 ;;
	--sizes) sizes=${2:?--sizes needs a value}; shift 2 ;;
	--no-build) build=0; shift ;;
	--out) out=${2:?--out needs a value}; shift 2 ;;
	--quiet-wait) quiet_wait=${2:?--quiet-wait needs a value}; shift 2 ;;
	-h | --help) usage ;;
	*) say "unknown argument: $1"; usage ;;
	esac
done
if ! [[ $secs =~ ^[0-9]+$ ]] || ((secs < 1 || secs > 600)); then
	die "--seconds must be 1..600"
fi
if ! [[ $quiet_wait =~ ^[0-9]+$ ]] || ((quiet_wait > 3600)); then
	die "--quiet-wait must be 0..3600"
fi
read -r -a size_list <<<"$sizes"
((${#size_list[@]})) || die "--sizes is empty"
for s in "${size_list[@]}"; do
	if ! [[ $s =~ ^[0-9]+$ ]] || ((s < 8)); then die "bad size: $s"; fi
done
((EUID == 0)) || die "needs root (bench/corosync/run.sh uses namespaces)"
command -v jq >/dev/null || die "jq not found (apt-get install -y jq)"

if [[ -z $out ]]; then
	out=$(mktemp -d /tmp/troupe-compare.XXXXXX)
else
	mkdir -p "$out"
fi

# ---------------------------------------------------------------------------
# Build troupe. Others may be editing the tree: retry, then fall back to the
# last built binary, and say so.

built=0
if ((build)); then
	command -v cargo >/dev/null || die "cargo not found"
	for ((try = 1; try <= BUILD_TRIES; try++)); do
		say "cargo build --release (try $try of $BUILD_TRIES) ..."
		if (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release --quiet) >"$out/build.log" 2>&1; then
			built=1
			break
		fi
		say "build failed (last lines of $out/build.log below)"
		tail -n 15 "$out/build.log" >&2 || true
		if ((try < BUILD_TRIES)); then sleep "$BUILD_RETRY_WAIT"; fi
	done
	if ((!built)); then
		[[ -x $TROUPE ]] || die "cannot build troupe and no earlier binary at $TROUPE"
		say "WARNING: using the last built binary ($(date -u -r "$TROUPE" '+%F %T UTC'))"
	fi
fi
[[ -x $TROUPE ]] || die "no troupe binary at $TROUPE (run without --no-build)"
troupe_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null) ]]; then
	troupe_rev="$troupe_rev+local changes"
fi
if ((!build)) || ((!built)); then
	# The binary may come from anyone's build of the shared tree.
	troupe_rev="of unknown revision (HEAD is $troupe_rev; not built by this run)"
fi
troupe_built=$(date -u -r "$TROUPE" '+%F %T UTC')

# ---------------------------------------------------------------------------
# The runs, one at a time.

last_json_line() {
	# The last line of a file that parses as a JSON object.
	local line
	line=$(grep '^{' "$1" | tail -n 1) || return 1
	jq -e 'type == "object"' <<<"$line" >/dev/null 2>&1 || return 1
	echo "$line"
}

# Percent of CPU busy over one second, all cores.
cpu_busy() {
	local a b
	read -r -a a < <(head -n 1 /proc/stat)
	sleep 1
	read -r -a b < <(head -n 1 /proc/stat)
	local total=0 idle i
	for ((i = 1; i <= 8; i++)); do total=$((total + b[i] - a[i])); done
	idle=$((b[4] - a[4] + b[5] - a[5]))
	((total > 0)) || { echo 0; return; }
	echo $((100 * (total - idle) / total))
}

# Others may share this machine: wait (bounded) until it is nearly idle, so
# that no run overlaps a previous one's tail or someone's build; go anyway
# after quiet_wait seconds. Sets `busy` to the last measure.
wait_quiet() {
	local t
	busy=$(cpu_busy)
	for ((t = 0; t < quiet_wait && busy > QUIET_BUSY; t++)); do
		busy=$(cpu_busy)
	done
	if ((busy > QUIET_BUSY)); then
		say "WARNING: the CPU is still ${busy}% busy after ${quiet_wait} s of waiting; running anyway"
	fi
}

declare -A troupe_json cs_json cs_busy troupe_busy
busy=0
for s in "${size_list[@]}"; do
	wait_quiet
	troupe_busy[$s]=$busy
	say "troupe bench: $s B, ${secs} s (then its raw TCP baseline, ${secs} s); CPU ${busy}% busy before"
	if ! timeout $((2 * secs + 240)) "$TROUPE" bench --members 3 --ordering total \
		--senders all --size "$s" --seconds "$secs" --json \
		>"$out/troupe-$s.out" 2>"$out/troupe-$s.err"; then
		tail -n 20 "$out/troupe-$s.err" >&2 || true
		die "troupe bench at $s B failed (see $out/troupe-$s.err)"
	fi
	troupe_json[$s]=$(last_json_line "$out/troupe-$s.out") ||
		die "troupe bench at $s B printed no JSON (see $out/troupe-$s.out)"

	for rr in yes no; do
		wait_quiet
		cs_busy[$s/$rr]=$busy
		say "corosync: $s B, ${secs} s, sched_rr $rr; CPU ${busy}% busy before"
		if ! timeout $((secs + 240)) "$HERE/corosync/run.sh" --size "$s" --seconds "$secs" \
			--senders all --sched-rr "$rr" \
			>"$out/corosync-$s-rr-$rr.out" 2>"$out/corosync-$s-rr-$rr.err"; then
			tail -n 30 "$out/corosync-$s-rr-$rr.err" >&2 || true
			die "the Corosync run at $s B (sched_rr $rr) failed (see $out/corosync-$s-rr-$rr.err)"
		fi
		cs_json[$s/$rr]=$(last_json_line "$out/corosync-$s-rr-$rr.out") ||
			die "the Corosync run at $s B printed no JSON (see $out/corosync-$s-rr-$rr.out)"
	done
done

# ---------------------------------------------------------------------------
# The table.

first=${size_list[0]}
cs_version=$(jq -r .version <<<"${cs_json[$first/yes]}")
cs_transport=$(jq -r .transport <<<"${cs_json[$first/yes]}")
{
	echo
	echo "### troupe vs Corosync: 3 members, total order, all members send, ${secs} s"
	echo
	echo "$(date -u '+%F %T UTC'), $(nproc) cores, Linux $(uname -r); troupe $troupe_rev (built $troupe_built);"
	echo "Corosync $cs_version, CPG \`CPG_TYPE_AGREED\` over $cs_transport, 3 nodes in 3 network namespaces."
	echo
	echo "| size | system | msgs/s per member | MB/s | p50 µs | p99 µs | CPU busy before |"
	echo "|---:|---|---:|---:|---:|---:|---:|"
	for s in "${size_list[@]}"; do
		jq -rn --argjson t "${troupe_json[$s]}" --argjson y "${cs_json[$s/yes]}" \
			--argjson n "${cs_json[$s/no]}" --arg s "$s" --arg cv "$cs_version" \
			--arg tb "${troupe_busy[$s]}" --arg yb "${cs_busy[$s/yes]}" --arg nb "${cs_busy[$s/no]}" '
			def n0: . * 1 | round | tostring;
			def n2: (. * 100 | round) / 100 | tostring;
			def mb: if . >= 10 then ((. * 10 | round) / 10 | tostring) else n2 end;
			def ratio($a; $b): if $b > 0 then ($a / $b | n2) + "x" else "n/a" end;
			(if $n.msgs_per_sec > $y.msgs_per_sec then $n else $y end) as $c
			| "| \($s) B | troupe total | \($t.msgs_per_sec | n0) | \($t.mb_per_sec | mb) | \($t.p50_us | n0) | \($t.p99_us | n0) | \($tb)% |",
			  "| \($s) B | Corosync \($cv) CPG agreed, stock (sched_rr yes) | \($y.msgs_per_sec | n0) | \($y.mb_per_sec | mb) | \($y.p50_us | n0) | \($y.p99_us | n0) | \($yb)% |",
			  "| \($s) B | Corosync \($cv) CPG agreed, sched_rr no | \($n.msgs_per_sec | n0) | \($n.mb_per_sec | mb) | \($n.p50_us | n0) | \($n.p99_us | n0) | \($nb)% |",
			  "| \($s) B | **troupe / faster Corosync (sched_rr \($c.sched_rr))** | **\(ratio($t.msgs_per_sec; $c.msgs_per_sec))** | \(ratio($t.mb_per_sec; $c.mb_per_sec)) | \(ratio($t.p50_us; $c.p50_us)) | \(ratio($t.p99_us; $c.p99_us)) | |",
			  "| \($s) B | troupe / stock Corosync | \(ratio($t.msgs_per_sec; $y.msgs_per_sec)) | \(ratio($t.mb_per_sec; $y.mb_per_sec)) | \(ratio($t.p50_us; $y.p50_us)) | \(ratio($t.p99_us; $y.p99_us)) | |",
			  "| \($s) B | (raw TCP mesh: troupe bench'"'"'s baseline) | \($t.baseline_msgs_per_sec // 0 | n0) | \($t.baseline_mb_per_sec // 0 | mb) | \($t.baseline_p50_us // 0 | n0) | \($t.baseline_p99_us // 0 | n0) | |"
		'
	done
	echo
	echo "msgs/s per member: deliveries per second at each member (own messages included), mean over members."
	echo "Latency ratios are troupe's over Corosync's: below 1x, troupe is faster. CPU busy: all cores, the second before the run."
	if [[ -n ${troupe_json[64]:-} ]]; then
		jq -rn --argjson t "${troupe_json[64]}" --argjson y "${cs_json[64/yes]}" --argjson n "${cs_json[64/no]}" '
			def r($c): if $c.msgs_per_sec > 0 then $t.msgs_per_sec / $c.msgs_per_sec else 0 end;
			def x: ((. * 100 | round) / 100 | tostring) + "x";
			([r($y), r($n)] | min) as $worst
			| "Issue 6 target, 64 B total-order throughput of troupe >= 10x Corosync'"'"'s: " +
			  "\(r($y) | x) against stock Corosync, \(r($n) | x) against sched_rr no: " +
			  (if $worst >= 10 then "met." elif r($y) >= 10 then "met against stock Corosync only." else "NOT met." end)'
	fi
	echo
	echo "Raw output in $out."
} | tee "$out/table.md"
