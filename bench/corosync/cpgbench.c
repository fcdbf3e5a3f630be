/*
 * cpgbench: one member of the Corosync side of troupe's benchmark comparison.
 *
 * Joins a CPG group, waits until the group has --members members (the
 * configuration change that brings in the last one reaches every member at
 * nearly the same moment: that is the start barrier), then multicasts
 * (--senders all: every member; one: only --index 0) with
 * cpg_mcast_joined(CPG_TYPE_AGREED) as fast as Corosync's flow control
 * allows, warms up --warmup seconds, and measures --seconds seconds.
 *
 * It counts this member's deliveries in the measured window (its own
 * messages included, as a multicast delivers them to the sender too) and
 * records, for every delivery, the time from send to delivery: the sender
 * writes CLOCK_MONOTONIC in the first 8 bytes of the payload (the members
 * are processes of one machine and share that clock; network namespaces do
 * not change it). The send time is taken when the message is first offered
 * and kept across CS_ERR_TRY_AGAIN retries, so waiting on flow control
 * counts as latency, as it does in `troupe bench` (whose payload is stamped
 * before `send().await`). troupe's bench records every delivery too; the
 * latencies of this member's own messages are reported apart as well.
 *
 * Output: one JSON line on stdout with the counts and the histogram as
 * [value_ns, count] pairs (run.sh merges the members' histograms).
 *
 * Build: gcc -O2 -Wall -o cpgbench cpgbench.c -lcpg
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <corosync/cpg.h>

/* ---------------------------------------------------------------------- */
/* A log-linear histogram: exact below 2048 ns, then 1024 sub-buckets per
 * power of two (0.1 % precision), up to 2^63 ns. */

#define SUB_BITS 10
#define SUB (1u << SUB_BITS)
#define NBUCKETS (64u * SUB)

struct hist {
	uint64_t *counts;
	uint64_t total;
};

static unsigned bucket_of(uint64_t v)
{
	if (v < 2 * SUB)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = e - SUB_BITS;
	return shift * SUB + (unsigned)(v >> shift);
}

/* The highest value a bucket holds (as HdrHistogram reports quantiles). */
static uint64_t bucket_high(unsigned b)
{
	if (b < 2 * SUB)
		return b;
	unsigned shift = b / SUB - 1;
	uint64_t low = (uint64_t)(b - shift * SUB) << shift;
	return low + ((uint64_t)1 << shift) - 1;
}

static void hist_init(struct hist *h)
{
	h->counts = calloc(NBUCKETS, sizeof(uint64_t));
	h->total = 0;
	if (!h->counts) {
		fprintf(stderr, "cpgbench: out of memory\n");
		exit(1);
	}
}

static void hist_record(struct hist *h, uint64_t v)
{
	h->counts[bucket_of(v)]++;
	h->total++;
}

static double hist_quantile_us(const struct hist *h, double q)
{
	if (h->total == 0)
		return 0.0;
	uint64_t want = (uint64_t)(q * (double)h->total + 0.999999);
	if (want < 1)
		want = 1;
	uint64_t seen = 0;
	for (unsigned b = 0; b < NBUCKETS; b++) {
		seen += h->counts[b];
		if (seen >= want)
			return (double)bucket_high(b) / 1e3;
	}
	return 0.0;
}

/* ---------------------------------------------------------------------- */

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct {
	uint32_t nodeid;
	uint32_t pid;
	unsigned members_wanted;
	unsigned members_now;
	int running;          /* past the start barrier */
	int lost_member;      /* the group shrank while running */
	uint64_t win_from;    /* measured window, monotonic ns */
	uint64_t win_to;
	uint64_t delivered;
	uint64_t short_msgs;
	struct hist all;
	struct hist own;
} st;

static void on_deliver(cpg_handle_t handle, const struct cpg_name *group,
		       uint32_t nodeid, uint32_t pid, void *msg, size_t len)
{
	(void)handle;
	(void)group;
	uint64_t now = mono_ns();
	if (now < st.win_from || now >= st.win_to)
		return;
	if (len < 8) {
		st.short_msgs++;
		return;
	}
	uint64_t sent;
	memcpy(&sent, msg, 8);
	uint64_t lat = now > sent ? now - sent : 0;
	st.delivered++;
	hist_record(&st.all, lat);
	if (nodeid == st.nodeid && pid == st.pid)
		hist_record(&st.own, lat);
}

static void on_confchg(cpg_handle_t handle, const struct cpg_name *group,
		       const struct cpg_address *members, size_t n_members,
		       const struct cpg_address *left, size_t n_left,
		       const struct cpg_address *joined, size_t n_joined)
{
	(void)handle;
	(void)group;
	(void)members;
	(void)left;
	(void)joined;
	(void)n_joined;
	st.members_now = (unsigned)n_members;
	if (st.running && n_left > 0 && mono_ns() < st.win_to)
		st.lost_member = 1;
}

static cpg_callbacks_t callbacks = {
	.cpg_deliver_fn = on_deliver,
	.cpg_confchg_fn = on_confchg,
};

static void usage(void)
{
	fprintf(stderr,
		"usage: cpgbench --size N --seconds S --senders all|one --index I\n"
		"                [--members M (3)] [--warmup W (1)] [--group NAME]\n"
		"                [--form-timeout T (30)] [--drain D (2)]\n");
	exit(2);
}

static void die_cs(const char *what, cs_error_t rc)
{
	fprintf(stderr, "cpgbench: %s failed: cs_error %d\n", what, (int)rc);
	exit(1);
}

/* Waits up to ms for the IPC socket, then dispatches what is there. */
static void pump(cpg_handle_t h, int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r = poll(&p, 1, ms);
	if (r < 0 && errno != EINTR) {
		perror("cpgbench: poll");
		exit(1);
	}
	cs_error_t rc = cpg_dispatch(h, CS_DISPATCH_ALL);
	if (rc != CS_OK && rc != CS_ERR_TRY_AGAIN)
		die_cs("cpg_dispatch", rc);
}

int main(int argc, char **argv)
{
	long size = -1, seconds = -1, index = -1;
	long members = 3, warmup = 1, form_timeout = 30, drain = 2;
	const char *senders = NULL;
	const char *group_name = "troupe-cpgbench";

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			usage();
		if (!strcmp(a, "--size"))
			size = atol(v);
		else if (!strcmp(a, "--seconds"))
			seconds = atol(v);
		else if (!strcmp(a, "--senders"))
			senders = v;
		else if (!strcmp(a, "--index"))
			index = atol(v);
		else if (!strcmp(a, "--members"))
			members = atol(v);
		else if (!strcmp(a, "--warmup"))
			warmup = atol(v);
		else if (!strcmp(a, "--group"))
			group_name = v;
		else if (!strcmp(a, "--form-timeout"))
			form_timeout = atol(v);
		else if (!strcmp(a, "--drain"))
			drain = atol(v);
		else
			usage();
		i++;
	}
	if (size < 8 || size > (1 << 20) || seconds < 1 || seconds > 3600 ||
	    index < 0 || members < 1 || warmup < 0 || form_timeout < 1 ||
	    drain < 0 || !senders ||
	    (strcmp(senders, "all") && strcmp(senders, "one")) ||
	    strlen(group_name) >= CPG_MAX_NAME_LENGTH)
		usage();
	int sends = !strcmp(senders, "all") || index == 0;

	hist_init(&st.all);
	hist_init(&st.own);
	st.members_wanted = (unsigned)members;
	st.pid = (uint32_t)getpid();
	st.win_from = UINT64_MAX;
	st.win_to = 0;

	cpg_handle_t h;
	cs_error_t rc;
	for (int tries = 0;; tries++) {
		rc = cpg_initialize(&h, &callbacks);
		if (rc == CS_OK)
			break;
		if (tries > 50)
			die_cs("cpg_initialize", rc);
		usleep(100000);
	}
	if ((rc = cpg_local_get(h, &st.nodeid)) != CS_OK)
		die_cs("cpg_local_get", rc);
	int fd;
	if ((rc = cpg_fd_get(h, &fd)) != CS_OK)
		die_cs("cpg_fd_get", rc);
	struct cpg_name group;
	group.length = (uint32_t)strlen(group_name);
	memcpy(group.value, group_name, group.length);
	for (int tries = 0;; tries++) {
		rc = cpg_join(h, &group);
		if (rc == CS_OK)
			break;
		if (rc != CS_ERR_TRY_AGAIN || tries > 100)
			die_cs("cpg_join", rc);
		usleep(50000);
	}

	/* The start barrier: every member in the group. */
	uint64_t give_up = mono_ns() + (uint64_t)form_timeout * 1000000000u;
	while (st.members_now < st.members_wanted) {
		if (mono_ns() > give_up) {
			fprintf(stderr,
				"cpgbench: only %u of %u members joined the CPG group within %ld s\n",
				st.members_now, st.members_wanted, form_timeout);
			return 1;
		}
		pump(h, fd, 50);
	}
	st.running = 1;
	uint64_t t0 = mono_ns();
	st.win_from = t0 + (uint64_t)warmup * 1000000000u;
	st.win_to = st.win_from + (uint64_t)seconds * 1000000000u;
	fprintf(stderr, "cpgbench[%ld]: nodeid %u, %u members: go\n", index,
		st.nodeid, st.members_now);

	char *payload = calloc(1, (size_t)size);
	if (!payload) {
		fprintf(stderr, "cpgbench: out of memory\n");
		return 1;
	}
	struct iovec iov = { .iov_base = payload, .iov_len = (size_t)size };
	uint64_t sent = 0, sent_in_window = 0, try_again = 0;
	int pending = 0;
	uint64_t now;
	while ((now = mono_ns()) < st.win_to) {
		if (st.lost_member) {
			fprintf(stderr, "cpgbench[%ld]: a member left during the run\n", index);
			return 1;
		}
		if (!sends) {
			pump(h, fd, 10);
			continue;
		}
		int blocked = 0;
		for (int burst = 0; burst < 64; burst++) {
			if (!pending) {
				uint64_t t = mono_ns();
				memcpy(payload, &t, 8);
				pending = 1;
			}
			rc = cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1);
			if (rc == CS_OK) {
				uint64_t t;
				memcpy(&t, payload, 8);
				sent++;
				if (t >= st.win_from && t < st.win_to)
					sent_in_window++;
				pending = 0;
				continue;
			}
			if (rc == CS_ERR_TRY_AGAIN) {
				try_again++;
				blocked = 1;
				break;
			}
			die_cs("cpg_mcast_joined", rc);
		}
		/* Deliveries free flow control: take them; wait a little if blocked. */
		pump(h, fd, blocked ? 1 : 0);
	}
	uint64_t t_end = mono_ns();
	double secs = (double)((t_end < st.win_to ? t_end : st.win_to) - st.win_from) / 1e9;

	/* Keep the group whole while the others finish their windows. */
	uint64_t drain_to = mono_ns() + (uint64_t)drain * 1000000000u;
	while (mono_ns() < drain_to)
		pump(h, fd, 10);
	cpg_leave(h, &group);
	cpg_finalize(h);

	double rate = secs > 0 ? (double)st.delivered / secs : 0.0;
	printf("{\"system\":\"corosync\",\"index\":%ld,\"nodeid\":%u,\"pid\":%u,"
	       "\"size\":%ld,\"senders\":\"%s\",\"seconds\":%ld,\"warmup\":%ld,"
	       "\"secs\":%.6f,\"delivered\":%" PRIu64 ",\"msgs_per_sec\":%.3f,"
	       "\"sent\":%" PRIu64 ",\"sent_in_window\":%" PRIu64
	       ",\"try_again\":%" PRIu64 ",\"short_msgs\":%" PRIu64 ","
	       "\"p50_us\":%.3f,\"p99_us\":%.3f,\"p999_us\":%.3f,"
	       "\"own_count\":%" PRIu64 ",\"own_p50_us\":%.3f,\"own_p99_us\":%.3f,"
	       "\"hist\":[",
	       index, st.nodeid, st.pid, size, senders, seconds, warmup, secs,
	       st.delivered, rate, sent, sent_in_window, try_again, st.short_msgs,
	       hist_quantile_us(&st.all, 0.5), hist_quantile_us(&st.all, 0.99),
	       hist_quantile_us(&st.all, 0.999), st.own.total,
	       hist_quantile_us(&st.own, 0.5), hist_quantile_us(&st.own, 0.99));
	int first = 1;
	for (unsigned b = 0; b < NBUCKETS; b++) {
		if (!st.all.counts[b])
			continue;
		printf("%s[%" PRIu64 ",%" PRIu64 "]", first ? "" : ",",
		       bucket_high(b), st.all.counts[b]);
		first = 0;
	}
	printf("]}\n");
	fflush(stdout);
	return 0;
}
