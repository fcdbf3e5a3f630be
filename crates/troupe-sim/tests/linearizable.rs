//! The key-value linearizability checker: hand-built histories whose answer
//! is known, random histories that are linearizable by construction (and
//! certainly not after one mutation), and a size test.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use troupe_sim::check::linearizable::{
    check_kv, check_kv_with_budget, KvOp, KvOutcome, Operation, Verdict,
};

// ---------------------------------------------------------------------------
// Building histories by hand. Client 0 everywhere: the checker orders calls
// by their intervals only.

fn put(call: u64, ret: u64, key: &str, value: &str) -> Operation {
    Operation {
        client: 0,
        call,
        ret: Some(ret),
        op: KvOp::Put {
            key: key.into(),
            value: value.into(),
        },
        outcome: KvOutcome::Put,
    }
}

fn get(call: u64, ret: u64, key: &str, seen: Option<&str>) -> Operation {
    Operation {
        client: 0,
        call,
        ret: Some(ret),
        op: KvOp::Get { key: key.into() },
        outcome: KvOutcome::Get(seen.map(Into::into)),
    }
}

fn del(call: u64, ret: u64, key: &str, deleted: bool) -> Operation {
    Operation {
        client: 0,
        call,
        ret: Some(ret),
        op: KvOp::Delete { key: key.into() },
        outcome: KvOutcome::Delete { deleted },
    }
}

/// `o`, failed or timed out.
fn unknown(mut o: Operation) -> Operation {
    o.outcome = KvOutcome::Unknown;
    o
}

/// `o`, never returned.
fn never(mut o: Operation) -> Operation {
    o.ret = None;
    o
}

#[track_caller]
fn accepted(h: &[Operation]) {
    let v = check_kv(h);
    assert_eq!(v, Verdict::Linearizable, "expected linearizable:\n{v}");
}

/// Asserts a violation on `key`, and returns the explanation.
#[track_caller]
fn rejected(h: &[Operation], key: &str) -> String {
    match check_kv(h) {
        Verdict::Violation {
            key: k,
            explanation,
        } => {
            assert_eq!(
                k,
                key.as_bytes(),
                "violation on another key:\n{explanation}"
            );
            eprintln!("{}", check_kv(h));
            explanation
        }
        v => panic!("expected a violation on {key:?}, got: {v}"),
    }
}

// ---------------------------------------------------------------------------
// Hand-built histories.

#[test]
fn empty_history_is_linearizable() {
    accepted(&[]);
}

#[test]
fn sequential_history_is_linearizable() {
    accepted(&[
        get(0, 1, "k", None),
        put(2, 3, "k", "a"),
        get(4, 5, "k", Some("a")),
        put(6, 7, "k", "b"),
        get(8, 9, "k", Some("b")),
        del(10, 11, "k", true),
        get(12, 13, "k", None),
        put(14, 15, "k", "a"),
        get(16, 17, "k", Some("a")),
    ]);
}

#[test]
fn sequential_history_with_a_wrong_read_is_rejected() {
    rejected(
        &[
            put(0, 1, "k", "a"),
            put(2, 3, "k", "b"),
            get(4, 5, "k", Some("a")),
        ],
        "k",
    );
    rejected(&[put(0, 1, "k", "a"), get(2, 3, "k", None)], "k");
}

#[test]
fn read_overlapping_a_write_may_see_either_value() {
    let before = put(0, 10, "k", "a");
    let write = put(20, 40, "k", "b");
    accepted(&[before.clone(), write.clone(), get(30, 50, "k", Some("a"))]);
    accepted(&[before.clone(), write.clone(), get(30, 50, "k", Some("b"))]);
    // But not a value that neither order gives.
    rejected(&[before, write, get(30, 50, "k", None)], "k");
}

#[test]
fn read_called_before_the_write_it_saw_is_accepted_if_they_overlap() {
    // The history lists the read first and it was called first: the checker
    // must still linearize the write before it.
    accepted(&[get(0, 30, "k", Some("a")), put(10, 20, "k", "a")]);
}

#[test]
fn stale_read_after_a_completed_write_is_rejected() {
    let h = [
        put(0, 10, "k", "old"),
        put(20, 30, "k", "new"),
        get(40, 50, "k", Some("old")),
    ];
    let explanation = rejected(&h, "k");
    assert!(explanation.contains("#2"), "names the read:\n{explanation}");
    assert!(
        explanation.contains("\"old\"") && explanation.contains("\"new\""),
        "shows the values:\n{explanation}"
    );
    // Control: the same read overlapping the second write is fine.
    accepted(&[
        put(0, 10, "k", "old"),
        put(20, 30, "k", "new"),
        get(25, 50, "k", Some("old")),
    ]);
}

#[test]
fn read_of_a_value_never_written_is_rejected() {
    let explanation = rejected(
        &[put(0, 10, "k", "a"), get(20, 30, "k", Some("ghost"))],
        "k",
    );
    assert!(explanation.contains("no call ever wrote"), "{explanation}");
    // A value written to another key does not count.
    rejected(
        &[put(0, 10, "other", "a"), get(20, 30, "k", Some("a"))],
        "k",
    );
}

#[test]
fn read_of_a_write_called_after_the_read_returned_is_rejected() {
    rejected(&[get(0, 10, "k", Some("a")), put(20, 30, "k", "a")], "k");
}

#[test]
fn reads_going_back_in_time_are_rejected() {
    let writes = [put(0, 10, "k", "a"), put(20, 100, "k", "b")];
    // Both reads overlap the second write, but the later one sees the older
    // value after the earlier one saw the newer.
    let mut h = writes.to_vec();
    h.extend([get(30, 40, "k", Some("b")), get(50, 60, "k", Some("a"))]);
    rejected(&h, "k");
    // Control: if the two reads overlap, the second may take effect first.
    let mut h = writes.to_vec();
    h.extend([get(30, 60, "k", Some("b")), get(50, 70, "k", Some("a"))]);
    accepted(&h);
    // Control: in the right order they are fine.
    let mut h = writes.to_vec();
    h.extend([get(30, 40, "k", Some("a")), get(50, 60, "k", Some("b"))]);
    accepted(&h);
}

#[test]
fn unknown_write_observed_later_is_accepted() {
    accepted(&[unknown(put(0, 10, "k", "a")), get(100, 110, "k", Some("a"))]);
    accepted(&[never(put(0, 10, "k", "a")), get(100, 110, "k", Some("a"))]);
    // It may take effect long after it failed, even after a read missed it.
    accepted(&[
        unknown(put(0, 10, "k", "a")),
        get(20, 30, "k", None),
        get(40, 50, "k", Some("a")),
    ]);
}

#[test]
fn unknown_write_never_observed_is_accepted() {
    accepted(&[
        unknown(put(0, 10, "k", "a")),
        get(20, 30, "k", None),
        get(40, 50, "k", None),
    ]);
    accepted(&[never(put(0, 10, "k", "a")), get(20, 30, "k", None)]);
}

#[test]
fn unknown_write_cannot_take_effect_before_its_call_or_twice() {
    // Seen before it was called.
    rejected(
        &[get(0, 5, "k", Some("a")), unknown(put(10, 20, "k", "a"))],
        "k",
    );
    // Seen, then gone with nothing removing it.
    rejected(
        &[
            unknown(put(0, 10, "k", "a")),
            get(20, 30, "k", Some("a")),
            get(40, 50, "k", None),
        ],
        "k",
    );
    // Seen, overwritten, seen again: it took effect once only.
    rejected(
        &[
            never(put(0, 10, "k", "a")),
            get(20, 30, "k", Some("a")),
            put(40, 50, "k", "b"),
            get(60, 70, "k", Some("a")),
        ],
        "k",
    );
}

#[test]
fn delete_reports_whether_the_key_existed_and_removes_it() {
    accepted(&[
        del(0, 1, "k", false),
        put(2, 3, "k", "a"),
        del(4, 5, "k", true),
        get(6, 7, "k", None),
        del(8, 9, "k", false),
    ]);
    // Deleted a key that was never written.
    rejected(&[del(0, 1, "k", true)], "k");
    // Missed a key that was there.
    rejected(&[put(0, 1, "k", "a"), del(2, 3, "k", false)], "k");
    // Read the value after it was deleted.
    rejected(
        &[
            put(0, 1, "k", "a"),
            del(2, 3, "k", true),
            get(4, 5, "k", Some("a")),
        ],
        "k",
    );
    // Two deletes of one write cannot both have removed it...
    rejected(
        &[
            put(0, 1, "k", "a"),
            del(2, 10, "k", true),
            del(3, 11, "k", true),
        ],
        "k",
    );
    // ...but one of them may have come first and found the key absent.
    accepted(&[
        put(0, 1, "k", "a"),
        del(2, 10, "k", true),
        del(3, 11, "k", false),
    ]);
}

#[test]
fn unknown_delete_may_have_happened_or_not() {
    let base = [put(0, 1, "k", "a"), unknown(del(2, 3, "k", true))];
    let with = |reads: &[Operation]| {
        let mut h = base.to_vec();
        h.extend_from_slice(reads);
        h
    };
    accepted(&with(&[get(10, 11, "k", None)]));
    accepted(&with(&[get(10, 11, "k", Some("a"))]));
    accepted(&with(&[
        get(10, 11, "k", Some("a")),
        get(12, 13, "k", None),
    ]));
    rejected(
        &with(&[get(10, 11, "k", None), get(12, 13, "k", Some("a"))]),
        "k",
    );
}

#[test]
fn unknown_reads_constrain_nothing() {
    let mut ghost = get(20, 30, "k", Some("ghost"));
    ghost.outcome = KvOutcome::Unknown;
    accepted(&[put(0, 10, "k", "a"), ghost]);
    // A read that never returned is unknown, whatever its outcome says.
    accepted(&[put(0, 10, "k", "a"), never(get(20, 30, "k", Some("ghost")))]);
}

#[test]
fn touching_intervals_are_concurrent() {
    // `b` was called when `a` returned: either may have come first.
    accepted(&[
        put(0, 10, "k", "a"),
        put(10, 20, "k", "b"),
        get(30, 40, "k", Some("a")),
    ]);
    // One tick apart, they are ordered.
    rejected(
        &[
            put(0, 10, "k", "a"),
            put(11, 20, "k", "b"),
            get(30, 40, "k", Some("a")),
        ],
        "k",
    );
}

#[test]
fn keys_are_checked_independently() {
    // Each key alone is fine, even though a global order by value would not
    // be: `x` sees the new value of `x` while `y` still reads absent.
    accepted(&[
        put(0, 10, "x", "1"),
        get(20, 30, "y", None),
        put(40, 50, "y", "1"),
        get(60, 70, "x", Some("1")),
    ]);
    // The violating key is the one named, whatever the order of the history.
    let h = [
        put(0, 10, "b", "1"),
        put(0, 10, "a", "1"),
        put(20, 30, "b", "2"),
        get(40, 50, "b", Some("1")),
        get(40, 50, "a", Some("1")),
    ];
    rejected(&h, "b");
    let mut reversed = h.to_vec();
    reversed.reverse();
    rejected(&reversed, "b");
}

#[test]
fn history_order_does_not_matter() {
    let h = [
        put(0, 10, "k", "a"),
        put(5, 30, "k", "b"),
        get(20, 40, "k", Some("a")),
        get(50, 60, "k", Some("b")),
        del(55, 65, "k", true),
        get(70, 80, "k", None),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..20 {
        let mut shuffled = h.to_vec();
        shuffled.shuffle(&mut rng);
        accepted(&shuffled);
    }
}

#[test]
fn malformed_histories_are_reported_as_such() {
    let mut wrong_kind = put(0, 10, "k", "a");
    wrong_kind.outcome = KvOutcome::Get(None);
    let v = check_kv(&[get(0, 1, "k", None), wrong_kind]);
    assert!(matches!(v, Verdict::Malformed { index: 1, .. }), "{v}");
    let v = check_kv(&[put(10, 5, "k", "a")]);
    assert!(matches!(v, Verdict::Malformed { index: 0, .. }), "{v}");
    assert!(!v.is_linearizable());
}

/// Many concurrent writes of distinct values followed by reads that no
/// order explains: the search must try every order of the writes to know.
fn pathological(key: &str, writes: u64) -> Vec<Operation> {
    let mut h: Vec<Operation> = (0..writes)
        .map(|i| put(i, 1_000, key, &format!("v{i}")))
        .collect();
    // The last write was `v0`, and then `v1` without any write in between.
    h.push(get(2_000, 2_010, key, Some("v0")));
    h.push(get(2_020, 2_030, key, Some("v1")));
    h
}

#[test]
fn search_over_budget_gives_up_rather_than_claiming_success() {
    let started = Instant::now();
    let v = check_kv_with_budget(&pathological("k", 30), 20_000);
    eprintln!("gave up in {:?}: {v}", started.elapsed());
    match &v {
        Verdict::GaveUp { key, reason } => {
            assert_eq!(key, b"k");
            assert!(reason.contains("20000"), "{reason}");
        }
        v => panic!("expected to give up, got: {v}"),
    }
    assert!(!v.is_linearizable());
    // With a handful of writes the same shape is decided.
    rejected(&pathological("k", 4), "k");
}

#[test]
fn memoisation_decides_many_concurrent_writes() {
    // 14 concurrent writes have 14! orders but only 14 * 2^13 distinct
    // (set written, last value) states: within the default budget only
    // because states already explored are not explored again.
    let started = Instant::now();
    rejected(&pathological("k", 14), "k");
    eprintln!("decided in {:?}", started.elapsed());
}

#[test]
fn many_failed_puts_do_not_blow_up_the_search() {
    // 40 puts that failed, half of them read back: left pending forever,
    // they would make 2^40 subsets to rule out before the stale read at the
    // end; narrowed (read ones pinned before their reads, unread ones
    // dropped), the answer is immediate.
    let mut h = Vec::new();
    for i in 0..40u64 {
        let value = format!("v{i}");
        h.push(unknown(put(20 * i, 20 * i + 5, "k", &value)));
        if i % 2 == 0 {
            h.push(get(20 * i + 10, 20 * i + 15, "k", Some(&value)));
        }
    }
    h.extend([
        put(1_000, 1_010, "k", "old"),
        put(1_020, 1_030, "k", "new"),
        get(1_040, 1_050, "k", Some("old")),
    ]);
    match check_kv_with_budget(&h, 10_000) {
        Verdict::Violation { key, .. } => assert_eq!(key, b"k"),
        v => panic!("expected a violation, got: {v}"),
    }
    h.pop();
    assert_eq!(check_kv_with_budget(&h, 10_000), Verdict::Linearizable);
}

#[test]
fn violation_on_one_key_wins_over_giving_up_on_another() {
    let mut h = pathological("a", 30);
    h.extend([
        put(0, 10, "b", "old"),
        put(20, 30, "b", "new"),
        get(40, 50, "b", Some("old")),
    ]);
    match check_kv_with_budget(&h, 20_000) {
        Verdict::Violation { key, .. } => assert_eq!(key, b"b"),
        v => panic!("expected a violation on b, got: {v}"),
    }
}

// ---------------------------------------------------------------------------
// Random histories, linearizable by construction.

/// A random execution on a real map: each call takes effect at an instant
/// `at` (strictly increasing), and is given an interval around `at` with
/// random slack, `window` at most on each side, without overlapping the
/// client's previous call. A call fails with probability `failed_p`: a failed write took effect or
/// not (a coin), a failed read returned nothing; half of the failed calls
/// never return. Values are unique, so a read names the one write it saw.
/// The history is shuffled.
fn random_history(
    rng: &mut ChaCha8Rng,
    ops: usize,
    keys: usize,
    clients: usize,
    window: u64,
    failed_p: f64,
) -> Vec<Operation> {
    let mut map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    // When each client's previous call returned (or it gave up on it).
    let mut free_at = vec![0u64; clients];
    let mut at = 1_000u64;
    let mut h = Vec::with_capacity(ops);
    for n in 0..ops {
        at += rng.random_range(1..=10);
        let free: Vec<usize> = (0..clients).filter(|&c| free_at[c] < at).collect();
        let client = if free.is_empty() {
            let c = (0..clients).min_by_key(|&c| free_at[c]).unwrap();
            at = free_at[c] + 1;
            c
        } else {
            free[rng.random_range(0..free.len())]
        };
        let call = at - rng.random_range(0..=window.min(at - free_at[client] - 1));
        let ret = at + rng.random_range(0..=window);
        free_at[client] = ret;
        let key = format!("k{}", rng.random_range(0..keys)).into_bytes();
        let failed = rng.random_bool(failed_p);
        let (op, outcome) = match rng.random_range(0..10) {
            0..4 => (
                KvOp::Get { key: key.clone() },
                KvOutcome::Get(map.get(&key).cloned()),
            ),
            4..8 => {
                let value = format!("v{n}").into_bytes();
                if !failed || rng.random_bool(0.5) {
                    map.insert(key.clone(), value.clone());
                }
                (KvOp::Put { key, value }, KvOutcome::Put)
            }
            _ => {
                let deleted = if !failed || rng.random_bool(0.5) {
                    map.remove(&key).is_some()
                } else {
                    false
                };
                (KvOp::Delete { key }, KvOutcome::Delete { deleted })
            }
        };
        h.push(Operation {
            client: client as u64,
            call,
            ret: (!failed || rng.random_bool(0.5)).then_some(ret),
            op,
            outcome: if failed { KvOutcome::Unknown } else { outcome },
        });
    }
    h.shuffle(rng);
    h
}

/// Whether `o` is a call the checker must linearize.
fn known(o: &Operation) -> bool {
    o.ret.is_some() && o.outcome != KvOutcome::Unknown
}

/// Mutations of one read that certainly break linearizability, each with
/// its name: the read returns
/// - a value never written,
/// - the value of a write called after the read returned,
/// - the value of a write `p` such that another write `w` (acknowledged)
///   was called after `p` returned and returned before the read was called.
fn mutations(h: &[Operation]) -> Vec<(&'static str, Vec<Operation>)> {
    let with = |g: usize, value: &[u8]| {
        let mut m = h.to_vec();
        m[g].outcome = KvOutcome::Get(Some(value.to_vec()));
        m
    };
    let reads: Vec<usize> = (0..h.len())
        .filter(|&i| known(&h[i]) && matches!(h[i].op, KvOp::Get { .. }))
        .collect();
    let mut out = Vec::new();
    if let Some(&g) = reads.first() {
        out.push(("never written", with(g, b"never written")));
    }
    let puts = |key: &[u8]| -> Vec<(usize, Vec<u8>)> {
        (0..h.len())
            .filter_map(|i| match &h[i].op {
                KvOp::Put { key: k, value } if k == key => Some((i, value.clone())),
                _ => None,
            })
            .collect()
    };
    let g_ret = |g: usize| h[g].ret.unwrap();
    if let Some((g, value)) = reads.iter().find_map(|&g| {
        puts(h[g].op.key())
            .into_iter()
            .find(|&(p, _)| h[p].call > g_ret(g))
            .map(|(_, v)| (g, v))
    }) {
        out.push(("future write", with(g, &value)));
    }
    let stale = reads.iter().find_map(|&g| {
        let key = h[g].op.key();
        let writes: Vec<usize> = (0..h.len())
            .filter(|&w| {
                known(&h[w])
                    && h[w].op.key() == key
                    && !matches!(h[w].op, KvOp::Get { .. })
                    && h[w].ret.unwrap() < h[g].call
            })
            .collect();
        puts(key)
            .into_iter()
            .filter(|&(p, _)| known(&h[p]))
            .find(|&(p, _)| {
                writes
                    .iter()
                    .any(|&w| w != p && h[p].ret.unwrap() < h[w].call)
            })
            .map(|(_, v)| (g, v))
    });
    if let Some((g, value)) = stale {
        out.push(("overwritten write", with(g, &value)));
    }
    out
}

#[test]
fn random_linearizable_histories_are_accepted_and_mutated_reads_rejected() {
    let mut tried: BTreeMap<&'static str, usize> = BTreeMap::new();
    for seed in 0..300u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ops = rng.random_range(1..150);
        let keys = rng.random_range(1..5);
        let clients = rng.random_range(1..7);
        let window = [0, 5, 20, 60][rng.random_range(0..4)];
        let h = random_history(&mut rng, ops, keys, clients, window, 0.05);
        let v = check_kv(&h);
        assert_eq!(
            v,
            Verdict::Linearizable,
            "seed {seed}: a history linearizable by construction was not accepted:\n{v}"
        );
        for (name, m) in mutations(&h) {
            *tried.entry(name).or_default() += 1;
            let v = check_kv(&m);
            assert!(
                matches!(v, Verdict::Violation { .. }),
                "seed {seed}: a read mutated to see a {name} was not rejected: {v}"
            );
        }
    }
    eprintln!("mutations tried: {tried:?}");
    // Each kind of mutation was exercised many times.
    for name in ["never written", "future write", "overwritten write"] {
        assert!(tried.get(name).copied().unwrap_or(0) > 100, "{tried:?}");
    }
}

#[test]
fn two_thousand_ops_over_twenty_keys_are_checked_quickly() {
    let mut rng = ChaCha8Rng::seed_from_u64(2_000);
    let h = random_history(&mut rng, 2_000, 20, 8, 40, 0.05);
    let started = Instant::now();
    let v = check_kv(&h);
    eprintln!(
        "checked {} ops over 20 keys, 8 clients, in {:?}",
        h.len(),
        started.elapsed()
    );
    assert_eq!(v, Verdict::Linearizable, "{v}");
    for (name, m) in mutations(&h) {
        let started = Instant::now();
        let v = check_kv(&m);
        eprintln!("rejected a {name} in {:?}", started.elapsed());
        assert!(matches!(v, Verdict::Violation { .. }), "{name}: {v}");
    }
}
