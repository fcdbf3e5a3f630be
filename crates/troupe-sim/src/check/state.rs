//! State: S1 state transfer, S2 replicated determinism.
//!
//! The application records a digest of its replicated state at each view
//! boundary (`ViewInstalled.state_digest`, None for a joiner), when it
//! provides a snapshot for joiners (`StateProvided`) and when a joiner
//! restores one (`StateInstalled`).

use std::collections::BTreeMap;

use super::{few, fk, flist, flist_str, fm, fv, is_total, FastMap, Found, Index, Property, Sink};
use crate::history::{MemberIdRepr, MsgKey, RecordKind, ViewIdRepr};

/// **S1 state transfer**: for each view `v`, every state digest recorded for
/// the boundary of `v` is the same one: the old members'
/// `ViewInstalled(v).state_digest` (when Some), the joiners'
/// `StateInstalled { view: v }` and the providers'
/// `StateProvided { view: v }`. A view without any digest (an application
/// without state) passes. One violation per view.
pub(crate) fn s1_state_transfer(ix: &Index<'_>, sink: &mut Sink) {
    // view -> digest -> who recorded it, how; and when a second digest
    // first appeared.
    type Holders = Vec<(MemberIdRepr, &'static str)>;
    let mut by_view: BTreeMap<ViewIdRepr, (BTreeMap<u64, Holders>, Option<u64>)> = BTreeMap::new();
    for r in &ix.history.records {
        let (view, digest, how) = match &r.kind {
            RecordKind::ViewInstalled {
                view,
                state_digest: Some(d),
                ..
            } => (*view, *d, "installed the view"),
            RecordKind::StateInstalled { view, state_digest } => (*view, *state_digest, "restored"),
            RecordKind::StateProvided { view, state_digest } => (*view, *state_digest, "provided"),
            _ => continue,
        };
        let (digests, conflict_ns) = by_view.entry(view).or_default();
        digests.entry(digest).or_default().push((r.member, how));
        if digests.len() > 1 && conflict_ns.is_none() {
            *conflict_ns = Some(r.time_ns);
        }
    }
    for (v, (digests, conflict_ns)) in &by_view {
        if digests.len() < 2 {
            continue;
        }
        sink.add(Property::S1, *conflict_ns, || {
            let mut members: Vec<MemberIdRepr> = Vec::new();
            let sides: Vec<String> = digests
                .iter()
                .map(|(d, holders)| {
                    members.extend(holders.iter().take(2).map(|(m, _)| *m));
                    let who = holders
                        .iter()
                        .map(|(m, how)| format!("{} {}", fm(*m), how))
                        .collect::<Vec<_>>();
                    format!("{d:#x} ({})", flist_str(&who))
                })
                .collect();
            members.sort_unstable();
            members.dedup();
            Found {
                members,
                messages: vec![],
                view: Some(*v),
                detail: format!(
                    "members disagree on the state at the boundary of {}: {}; a joiner starts from \
                     exactly the state every old member holds",
                    fv(*v),
                    sides.join(" vs ")
                ),
            }
        });
    }
}

/// One member's passage through one view, as S2 compares them.
struct Passage {
    member: MemberIdRepr,
    end_digest: u64,
    time_ns: u64,
}

/// **S2 replicated determinism**: two members that start a view `v` from the
/// same state digest (their `ViewInstalled(v)` digest, or for a joiner its
/// `StateInstalled { view: v }` digest), deliver the same sequence of Total
/// and Safe messages in `v`, and then install the same next view `w`, hold
/// the same state digest at `w`'s boundary. One violation per such class of
/// members that ends with more than one digest.
///
/// Such a violation always shows under S1 too (two old members of `w`
/// recorded different digests for it); S2 adds the diagnosis: the
/// application's state is not a function of the ordered messages.
pub(crate) fn s2_replicated_determinism(ix: &Index<'_>, sink: &mut Sink) {
    let mut restored: FastMap<(MemberIdRepr, ViewIdRepr), u64> = FastMap::default();
    for r in &ix.history.records {
        if let RecordKind::StateInstalled { view, state_digest } = &r.kind {
            restored.entry((r.member, *view)).or_insert(*state_digest);
        }
    }
    type Key = (ViewIdRepr, ViewIdRepr, u64, Vec<MsgKey>);
    let mut classes: FastMap<Key, Vec<Passage>> = FastMap::default();
    for (p, mi) in &ix.members {
        for i in 1..mi.installs.len() {
            let (this, next) = (&mi.installs[i - 1], &mi.installs[i]);
            let start = this
                .state_digest
                .or_else(|| restored.get(&(*p, this.view)).copied());
            let (Some(start), Some(end_digest)) = (start, next.state_digest) else {
                continue;
            };
            let seq: Vec<MsgKey> = ix
                .delivered_in(*p, i - 1)
                .filter(|(_, class, _)| is_total(*class))
                .map(|(k, _, _)| k)
                .collect();
            classes
                .entry((this.view, next.view, start, seq))
                .or_default()
                .push(Passage {
                    member: *p,
                    end_digest,
                    time_ns: next.time_ns,
                });
        }
    }
    let mut broken: Vec<(Key, Vec<Passage>)> = classes
        .into_iter()
        .filter(|(_, ps)| ps.iter().any(|x| x.end_digest != ps[0].end_digest))
        .collect();
    broken
        .sort_by(|(ka, pa), (kb, pb)| (ka.0, ka.1, pa[0].member).cmp(&(kb.0, kb.1, pb[0].member)));
    for ((v, w, start, seq), ps) in broken {
        let time_ns = ps.iter().map(|x| x.time_ns).max();
        sink.add(Property::S2, time_ns, || {
            let names: Vec<MemberIdRepr> = ps.iter().map(|x| x.member).collect();
            let ends = ps
                .iter()
                .map(|x| format!("{:#x} at {}", x.end_digest, fm(x.member)))
                .collect::<Vec<_>>()
                .join(", ");
            Found {
                members: names.clone(),
                messages: few(&seq[seq.len().saturating_sub(super::EXAMPLES_MAX)..]),
                view: Some(v),
                detail: format!(
                    "{} all started {} from state {start:#x}, delivered the same {} total/safe message(s) in it{} \
                     and installed {}, but then held different states: {ends}; the replicated state must be \
                     a function of the ordered messages",
                    flist(&names, fm),
                    fv(v),
                    seq.len(),
                    if seq.is_empty() { String::new() } else { format!(" (ending {})", fk(seq[seq.len() - 1])) },
                    fv(w)
                ),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use troupe_core::Ordering;

    use crate::check::testkit::{assert_clean, assert_only, m, props, v, B};
    use crate::check::{check_all, Property};
    use crate::history::{MemberIdRepr, RecordKind};

    fn abc() -> [MemberIdRepr; 3] {
        [m(1, 1), m(2, 1), m(3, 1)]
    }

    /// a, b in v1 with state 5; d joins at v2, a provides.
    fn join(restored: u64) -> B {
        let [a, b, _] = abc();
        let d = m(4, 1);
        let mut h = B::new();
        for p in [a, b] {
            h.start(p);
        }
        h.install(&[a, b], v(1, a), &[a, b], Some(5));
        h.start(d);
        let v2 = v(2, a);
        h.install(&[a, b], v2, &[a, b, d], Some(5));
        h.raw(
            a,
            RecordKind::StateProvided {
                view: v2,
                state_digest: 5,
            },
        );
        h.install(&[d], v2, &[a, b, d], None);
        h.raw(
            d,
            RecordKind::StateInstalled {
                view: v2,
                state_digest: restored,
            },
        );
        h
    }

    #[test]
    fn joiner_restoring_the_providers_state_passes_s1() {
        assert_clean(&join(5).build());
    }

    #[test]
    fn joiner_restoring_a_different_state_breaks_s1() {
        let r = assert_only(&join(6).build(), Property::S1);
        let x = &r.violations[0];
        assert_eq!(x.view, Some(v(2, m(1, 1))));
        assert!(x.members.contains(&m(4, 1)));
        assert!(x.detail.contains("0x6 (n4.1 restored)"), "{}", x.detail);
    }

    #[test]
    fn old_members_disagreeing_at_a_boundary_break_s1() {
        let [a, b, _] = abc();
        let (mut h, _) = B::group(&[a, b]);
        h.install(&[a], v(2, a), &[a, b], Some(1));
        h.install(&[b], v(2, a), &[a, b], Some(2));
        assert!(props(&check_all(&h.build())).contains(&Property::S1));
    }

    #[test]
    fn same_total_sequence_same_state_passes_s2() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let t = h.send(a, Ordering::Total);
        h.deliver(&[a, b, c], t);
        h.install(&[a, b, c], v(2, a), &[a, b, c], Some(7));
        assert_clean(&h.build());
    }

    #[test]
    fn same_total_sequence_different_state_breaks_s2() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let t = h.send(a, Ordering::Total);
        h.deliver(&[a, b, c], t);
        h.install(&[a, b], v(2, a), &[a, b, c], Some(7));
        h.install(&[c], v(2, a), &[a, b, c], Some(8));
        let r = check_all(&h.build());
        // The differing digests at v2's boundary also break S1 (see the doc
        // of s2_replicated_determinism); nothing else is broken.
        assert_eq!(props(&r), [Property::S1, Property::S2].into());
        let x = r
            .violations
            .iter()
            .find(|x| x.property == Property::S2)
            .unwrap();
        assert_eq!(x.members, vec![a, b, c]);
        assert_eq!(x.messages, vec![t]);
        assert!(x.detail.contains("0x8 at n3.1"), "{}", x.detail);
    }

    #[test]
    fn joiner_diverging_after_state_transfer_breaks_s2() {
        let mut h = join(5);
        let [a, b, _] = abc();
        let d = m(4, 1);
        let t = h.send(b, Ordering::Safe);
        h.deliver(&[a, b, d], t);
        h.install(&[a, b], v(3, a), &[a, b, d], Some(9));
        h.install(&[d], v(3, a), &[a, b, d], Some(10));
        let r = check_all(&h.build());
        assert_eq!(props(&r), [Property::S1, Property::S2].into());
        assert_eq!(r.count(Property::S2), 1);
    }

    #[test]
    fn different_starting_states_are_not_compared_by_s2() {
        // S1 flags the start; S2 only compares members that start alike.
        let [a, b, _] = abc();
        let (mut h, _) = B::group(&[a]);
        h.start(b);
        let v2 = v(2, a);
        h.install(&[a], v2, &[a, b], Some(1));
        h.install(&[b], v2, &[a, b], None);
        h.raw(
            b,
            RecordKind::StateInstalled {
                view: v2,
                state_digest: 2,
            },
        );
        h.install(&[a], v(3, a), &[a, b], Some(3));
        h.install(&[b], v(3, a), &[a, b], Some(4));
        let r = check_all(&h.build());
        assert_eq!(r.count(Property::S2), 0);
        assert!(r.count(Property::S1) > 0);
    }
}
