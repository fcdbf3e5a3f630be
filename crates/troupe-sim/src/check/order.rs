//! Order: O1 fifo, O2 causal, O3 total, O4 uniformity (safe).
//!
//! A message's class is the ordering of its `Send` (the ordering a delivery
//! reports is only used when the send is unknown; V1 reports a mismatch).

use std::collections::BTreeMap;

use super::{
    fk, fm, fv, is_total, FastMap, Found, Index, Property, Sink, CAUSAL, FIFO, SAFE, TOTAL,
};
use crate::history::{MemberIdRepr, MsgKey, RecordKind, ViewIdRepr};

/// **O1 fifo**: at each member, for each sender, the Fifo messages from that
/// sender are delivered in increasing `n` (send order); likewise the Causal
/// ones among themselves, and the Total and Safe ones together. Gaps are
/// allowed (a crashed sender's last messages may be lost everywhere).
pub(crate) fn o1_fifo(ix: &Index<'_>, sink: &mut Sink) {
    // (member, sender, class group) -> the highest message delivered so far.
    let mut highest: FastMap<(MemberIdRepr, MemberIdRepr, u8), MsgKey> = FastMap::default();
    for r in &ix.history.records {
        let RecordKind::Deliver { msg, ordering, .. } = &r.kind else {
            continue;
        };
        let group = match ix.class_of(msg, *ordering) {
            FIFO => FIFO,
            CAUSAL => CAUSAL,
            TOTAL | SAFE => TOTAL,
            _ => continue,
        };
        let prev = highest.entry((r.member, msg.sender, group)).or_insert(*msg);
        if msg.n >= prev.n {
            *prev = *msg;
            continue;
        }
        let prev = *prev;
        let name = match group {
            FIFO => "fifo",
            CAUSAL => "causal",
            _ => "total/safe",
        };
        sink.add(Property::O1, Some(r.time_ns), || Found {
            members: vec![r.member, msg.sender],
            messages: vec![prev, *msg],
            view: None,
            detail: format!(
                "{} delivered {} after {}, both {} from {}: a sender's messages are delivered in the order sent",
                fm(r.member),
                fk(*msg),
                fk(prev),
                name,
                fm(msg.sender)
            ),
        });
    }
}

/// Dense numbering of the senders of causal messages, so that dependency
/// vectors are plain `Vec`s.
#[derive(Default)]
struct Senders {
    index: FastMap<MemberIdRepr, usize>,
    ids: Vec<MemberIdRepr>,
}

impl Senders {
    fn of(&mut self, m: MemberIdRepr) -> usize {
        *self.index.entry(m).or_insert_with(|| {
            self.ids.push(m);
            self.ids.len() - 1
        })
    }
}

/// `v[i] = max(v[i], n)`, growing `v` as needed.
fn raise(v: &mut Vec<u64>, i: usize, n: u64) {
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] = v[i].max(n);
}

/// **O2 causal**: happened-before among Causal messages. Each causal message
/// `m` gets a dependency vector `dep(m)` (sender -> highest `n` in its causal
/// past), computed by replaying the history in record order: a member's
/// vector `D` absorbs `dep(m')` and `m'` itself when it delivers a causal
/// `m'`, and `dep(m)` is a copy of `D` when it sends a causal `m`. A member
/// that delivers a causal `m1` from `q` with `m1.n <= dep(m)[q]` for some
/// causal `m` it delivered earlier broke causal order (`m1` is in `m`'s
/// causal past). O(records x senders).
pub(crate) fn o2_causal(ix: &Index<'_>, sink: &mut Sink) {
    let mut senders = Senders::default();
    // Sparse dependency vectors: (sender index, n), nonzero entries only.
    let mut dep: FastMap<MsgKey, Vec<(usize, u64)>> = FastMap::default();
    // Per member: its causal past so far (dense).
    let mut past: FastMap<MemberIdRepr, Vec<u64>> = FastMap::default();
    // Per member: for each sender, the highest n in the causal past of a
    // message it delivered, and that message.
    let mut maxdep: FastMap<MemberIdRepr, Vec<(u64, Option<MsgKey>)>> = FastMap::default();

    for (ri, r) in ix.history.records.iter().enumerate() {
        let p = r.member;
        match &r.kind {
            RecordKind::Send { msg, ordering, .. } if *ordering == CAUSAL && msg.sender == p => {
                let d = past.entry(p).or_default();
                let sparse: Vec<(usize, u64)> = d
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(i, n)| (i, *n))
                    .collect();
                dep.entry(*msg).or_insert(sparse);
                raise(d, senders.of(p), msg.n);
            }
            RecordKind::Deliver { msg, ordering, .. } if ix.class_of(msg, *ordering) == CAUSAL => {
                if ix.delivered[&(p, *msg)].rec != ri {
                    continue; // a duplicate: V1
                }
                let q = senders.of(msg.sender);
                let md = maxdep.entry(p).or_default();
                if let Some((n, Some(later))) = md.get(q).copied() {
                    if msg.n <= n {
                        sink.add(Property::O2, Some(r.time_ns), || Found {
                            members: vec![p, msg.sender, later.sender],
                            messages: vec![later, *msg],
                            view: None,
                            detail: format!(
                                "{} delivered {} after {}, which causally follows it ({} had seen {}#{} \
                                 when it sent {}): causal messages are delivered after their causal past",
                                fm(p),
                                fk(*msg),
                                fk(later),
                                fm(later.sender),
                                fm(msg.sender),
                                n,
                                fk(later)
                            ),
                        });
                    }
                }
                let d = past.entry(p).or_default();
                if let Some(deps) = dep.get(msg) {
                    for &(i, n) in deps {
                        raise(d, i, n);
                        if md.len() <= i {
                            md.resize(i + 1, (0, None));
                        }
                        if n > md[i].0 {
                            md[i] = (n, Some(*msg));
                        }
                    }
                }
                raise(d, q, msg.n);
            }
            _ => {}
        }
    }
}

/// **O3 total**: in each view `v`, the members that survive `v` and the
/// members alive at the end whose last view is `v` deliver the Total and
/// Safe messages (together) they have in common in one relative order.
/// Members that crash in `v` are not compared (Total is not uniform; Safe
/// uniformity is O4). Pairwise per view; one violation per pair, naming the
/// first inverted pair of messages.
pub(crate) fn o3_total(ix: &Index<'_>, sink: &mut Sink) {
    let mut by_view: BTreeMap<ViewIdRepr, Vec<(MemberIdRepr, usize)>> = BTreeMap::new();
    for (p, mi) in &ix.members {
        for (i, inst) in mi.installs.iter().enumerate() {
            if mi.survives(i) || (mi.alive_at_end && i + 1 == mi.installs.len()) {
                by_view.entry(inst.view).or_default().push((*p, i));
            }
        }
    }
    for (v, ps) in &by_view {
        if ps.len() < 2 {
            continue;
        }
        let mut seqs: Vec<Vec<(MsgKey, u64)>> = Vec::with_capacity(ps.len());
        let mut pos: Vec<FastMap<MsgKey, usize>> = Vec::with_capacity(ps.len());
        for (p, i) in ps {
            let mut seq = Vec::new();
            let mut at: FastMap<MsgKey, usize> = FastMap::default();
            for (k, class, ri) in ix.delivered_in(*p, *i) {
                if is_total(class) && !at.contains_key(&k) {
                    at.insert(k, seq.len());
                    seq.push((k, ix.rec(ri).time_ns));
                }
            }
            seqs.push(seq);
            pos.push(at);
        }
        for a in 0..ps.len() {
            for b in a + 1..ps.len() {
                // Walk b's sequence; positions at a of the common messages
                // must increase.
                let mut last: Option<(usize, MsgKey)> = None;
                for &(k, t) in &seqs[b] {
                    let Some(&pa) = pos[a].get(&k) else { continue };
                    match last {
                        Some((pl, kl)) if pa < pl => {
                            let (pa_m, pb_m) = (ps[a].0, ps[b].0);
                            sink.add(Property::O3, Some(t), || Found {
                                members: vec![pa_m, pb_m],
                                messages: vec![kl, k],
                                view: Some(*v),
                                detail: format!(
                                    "in {} {} delivered {} before {} but {} delivered them in the opposite \
                                     order: total order is one order at all members",
                                    fv(*v),
                                    fm(pa_m),
                                    fk(k),
                                    fk(kl),
                                    fm(pb_m)
                                ),
                            });
                            break;
                        }
                        _ => last = Some((pa, k)),
                    }
                }
            }
        }
    }
}

/// **O4 uniformity (safe)**: if any member, even one that crashes right
/// after, delivers a Safe message in view `v`, every member that installs
/// `v` and survives it delivered that message in `v`. One violation per
/// survivor per view, counting the messages it missed.
pub(crate) fn o4_uniformity(ix: &Index<'_>, sink: &mut Sink) {
    let mut by_view: BTreeMap<ViewIdRepr, Vec<(MemberIdRepr, usize)>> = BTreeMap::new();
    for (p, mi) in &ix.members {
        for (i, inst) in mi.installs.iter().enumerate() {
            by_view.entry(inst.view).or_default().push((*p, i));
        }
    }
    for (v, ps) in &by_view {
        // Each Safe message delivered in v, with its first deliverer.
        let mut safe: BTreeMap<MsgKey, MemberIdRepr> = BTreeMap::new();
        for (p, i) in ps {
            for (k, class, _) in ix.delivered_in(*p, *i) {
                if class == SAFE {
                    safe.entry(k).or_insert(*p);
                }
            }
        }
        if safe.is_empty() {
            continue;
        }
        for (p, i) in ps {
            let mi = &ix.members[p];
            if !mi.survives(*i) {
                continue;
            }
            let missing: Vec<MsgKey> = safe
                .keys()
                .copied()
                .filter(|k| ix.delivered.get(&(*p, *k)).map(|d| d.install) != Some(*i as u32))
                .collect();
            let Some(first) = missing.first().copied() else {
                continue;
            };
            let deliverer = safe[&first];
            let next = &mi.installs[*i + 1];
            sink.add(Property::O4, Some(next.time_ns), || {
                let crashed = ix.members[&deliverer]
                    .records
                    .last()
                    .is_some_and(|ri| ix.rec(*ri).kind == RecordKind::Crashed);
                Found {
                    members: vec![*p, deliverer],
                    messages: super::few(&missing),
                    view: Some(*v),
                    detail: format!(
                        "{} delivered safe message {} in {}{}, but {} installed {} without delivering it in {} \
                         ({} such message(s), e.g. {}): a safe message is delivered by all survivors or by none",
                        fm(deliverer),
                        fk(first),
                        fv(*v),
                        if crashed { " (and later crashed)" } else { "" },
                        fm(*p),
                        fv(next.view),
                        fv(*v),
                        missing.len(),
                        super::flist(&missing, fk)
                    ),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use troupe_core::Ordering;

    use crate::check::testkit::{assert_clean, assert_only, m, v, B};
    use crate::check::Property;
    use crate::history::MemberIdRepr;

    fn abc() -> [MemberIdRepr; 3] {
        [m(1, 1), m(2, 1), m(3, 1)]
    }

    #[test]
    fn fifo_in_send_order_passes_and_reliable_may_reorder() {
        let [a, b, _] = abc();
        let (mut h, _) = B::group(&[a, b]);
        let f1 = h.send(a, Ordering::Fifo);
        let f2 = h.send(a, Ordering::Fifo);
        let r1 = h.send(a, Ordering::Reliable);
        let r2 = h.send(a, Ordering::Reliable);
        h.deliver(&[a, b], f1);
        h.deliver(&[a, b], f2);
        h.deliver(&[a, b], r2);
        h.deliver(&[a, b], r1);
        assert_clean(&h.build());
    }

    #[test]
    fn fifo_out_of_send_order_breaks_o1() {
        let [a, b, _] = abc();
        let (mut h, _) = B::group(&[a, b]);
        let f1 = h.send(a, Ordering::Fifo);
        let f2 = h.send(a, Ordering::Fifo);
        h.deliver(&[a], f1);
        h.deliver(&[a, b], f2);
        h.deliver(&[b], f1);
        let r = assert_only(&h.build(), Property::O1);
        assert_eq!(r.violations[0].messages, vec![f2, f1]);
    }

    #[test]
    fn total_out_of_a_senders_order_breaks_o1() {
        let [a, b, _] = abc();
        let (mut h, _) = B::group(&[a, b]);
        let t1 = h.send(a, Ordering::Total);
        let t2 = h.send(a, Ordering::Safe);
        h.deliver(&[a, b], t2);
        h.deliver(&[a, b], t1);
        assert_only(&h.build(), Property::O1);
    }

    #[test]
    fn causal_after_its_dependency_passes() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let c1 = h.send(a, Ordering::Causal);
        h.deliver(&[a, b, c], c1);
        let c2 = h.send(b, Ordering::Causal);
        h.deliver(&[b, a, c], c2);
        assert_clean(&h.build());
    }

    #[test]
    fn causal_before_its_dependency_breaks_o2() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let c1 = h.send(a, Ordering::Causal);
        h.deliver(&[a, b], c1);
        let c2 = h.send(b, Ordering::Causal);
        h.deliver(&[b, a, c], c2);
        h.deliver(&[c], c1);
        let r = assert_only(&h.build(), Property::O2);
        let x = &r.violations[0];
        assert_eq!(x.members, vec![c, a, b]);
        assert_eq!(x.messages, vec![c2, c1]);
    }

    #[test]
    fn transitive_causal_dependency_is_tracked_o2() {
        // a -> b -> c chain of causal sends; d gets the last before the first.
        let [a, b, c] = abc();
        let d = m(4, 1);
        let (mut h, _) = B::group(&[a, b, c, d]);
        let m1 = h.send(a, Ordering::Causal);
        h.deliver(&[a, b], m1);
        let m2 = h.send(b, Ordering::Causal);
        h.deliver(&[b, c], m2);
        let m3 = h.send(c, Ordering::Causal);
        h.deliver(&[c, a, b, d], m3);
        h.deliver(&[c, d], m1);
        h.deliver(&[a, d], m2);
        let r = assert_only(&h.build(), Property::O2);
        // d delivered m1 and m2 after m3; a delivered m2 after m3; c delivered
        // m1 after m2.
        assert_eq!(r.count(Property::O2), 4);
    }

    #[test]
    fn concurrent_causal_messages_in_different_orders_pass() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let x = h.send(a, Ordering::Causal);
        let y = h.send(b, Ordering::Causal);
        h.deliver(&[a, c], x);
        h.deliver(&[b, a, c], y);
        h.deliver(&[b], x);
        assert_clean(&h.build());
    }

    #[test]
    fn total_in_one_order_passes() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let t1 = h.send(a, Ordering::Total);
        let t2 = h.send(b, Ordering::Safe);
        h.deliver(&[a, b, c], t1);
        h.deliver(&[a, b, c], t2);
        h.install(&[a, b, c], v(2, a), &[a, b, c], Some(0));
        assert_clean(&h.build());
    }

    #[test]
    fn total_in_two_orders_breaks_o3() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let t1 = h.send(a, Ordering::Total);
        let t2 = h.send(b, Ordering::Total);
        h.deliver(&[a, c], t1);
        h.deliver(&[a, b, c], t2);
        h.deliver(&[b], t1);
        let r = assert_only(&h.build(), Property::O3);
        // a and c agree; b disagrees with both.
        assert_eq!(r.count(Property::O3), 2);
        for x in &r.violations {
            assert!(x.members.contains(&b));
            assert!(x.messages.contains(&t1) && x.messages.contains(&t2));
        }
    }

    #[test]
    fn member_crashing_in_the_view_is_not_compared_o3() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let t1 = h.send(a, Ordering::Total);
        let t2 = h.send(b, Ordering::Total);
        h.deliver(&[a, b], t1);
        h.deliver(&[c, a, b], t2);
        h.deliver(&[c], t1);
        h.crash(c);
        h.install(&[a, b], v(2, a), &[a, b], Some(0));
        assert_clean(&h.build());
    }

    #[test]
    fn safe_delivered_only_by_a_crashed_member_breaks_o4() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let s = h.send(a, Ordering::Safe);
        h.deliver(&[a], s);
        h.crash(a);
        h.install(&[b, c], v(2, b), &[b, c], Some(0));
        let r = assert_only(&h.build(), Property::O4);
        assert_eq!(r.count(Property::O4), 2);
        assert_eq!(r.violations[0].members, vec![b, a]);
        assert!(r.violations[0].detail.contains("(and later crashed)"));
    }

    #[test]
    fn safe_delivered_by_all_survivors_passes() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let s = h.send(a, Ordering::Safe);
        h.deliver(&[a, b, c], s);
        h.crash(a);
        h.install(&[b, c], v(2, b), &[b, c], Some(0));
        assert_clean(&h.build());
    }
}
