//! Delivery: V1 integrity, V2 sending view, V3 virtual synchrony, V4 self
//! delivery, V5 liveness.
//!
//! A delivery is "in v" at a member when it comes between that member's
//! install of `v` and its next install (or its end). Unreliable messages are
//! held to V1 and V2 only.

use std::collections::BTreeMap;

use super::{few, fk, flist, fm, fo, ft, fv, Found, Index, Property, Sink, NONE, UNRELIABLE};
use crate::history::{MemberIdRepr, MsgKey, RecordKind, ViewIdRepr};

/// **V1 integrity**: a member delivers a message at most once, only if its
/// sender recorded a `Send` of it earlier in the history, with the digest,
/// sender and ordering it was sent with. Also reports histories whose keys do
/// not identify messages (a key sent twice, or sent by another member than
/// the one it names), since every other checker relies on them.
pub(crate) fn v1_integrity(ix: &Index<'_>, sink: &mut Sink) {
    for (ri, r) in ix.history.records.iter().enumerate() {
        let p = r.member;
        let t = Some(r.time_ns);
        match &r.kind {
            RecordKind::Send { msg, .. } => {
                if p != msg.sender {
                    sink.add(Property::V1, t, || Found {
                        members: vec![p, msg.sender],
                        messages: vec![*msg],
                        view: None,
                        detail: format!(
                            "{} recorded a send of {}, a key that names another sender: keys must identify messages",
                            fm(p),
                            fk(*msg)
                        ),
                    });
                } else if ix.sends[msg].rec != ri {
                    sink.add(Property::V1, t, || Found {
                        members: vec![p],
                        messages: vec![*msg],
                        view: None,
                        detail: format!(
                            "{} sent two messages with the same key {}: keys must identify messages",
                            fm(p),
                            fk(*msg)
                        ),
                    });
                }
            }
            RecordKind::Deliver {
                msg,
                sender,
                ordering,
                digest,
                ..
            } => {
                let found = |detail: String| Found {
                    members: vec![p],
                    messages: vec![*msg],
                    view: None,
                    detail,
                };
                if ix.delivered[&(p, *msg)].rec != ri {
                    sink.add(Property::V1, t, || {
                        found(format!("{} delivered {} a second time", fm(p), fk(*msg)))
                    });
                    continue;
                }
                if *sender != msg.sender {
                    sink.add(Property::V1, t, || {
                        found(format!(
                            "{} delivered {} reporting {} as its sender",
                            fm(p),
                            fk(*msg),
                            fm(*sender)
                        ))
                    });
                }
                let Some(s) = ix.sends.get(msg) else {
                    sink.add(Property::V1, t, || {
                        found(format!(
                            "{} delivered {}, which {} never sent: a message was invented",
                            fm(p),
                            fk(*msg),
                            fm(msg.sender)
                        ))
                    });
                    continue;
                };
                if s.rec > ri {
                    sink.add(Property::V1, t, || {
                        found(format!(
                            "{} delivered {} before {} sent it (at {})",
                            fm(p),
                            fk(*msg),
                            fm(msg.sender),
                            ft(ix.rec(s.rec).time_ns)
                        ))
                    });
                }
                if *digest != s.digest {
                    sink.add(Property::V1, t, || {
                        found(format!(
                            "{} delivered {} with digest {digest:#x} but it was sent with {:#x}: the bytes changed",
                            fm(p),
                            fk(*msg),
                            s.digest
                        ))
                    });
                }
                if *ordering != s.ordering {
                    sink.add(Property::V1, t, || {
                        found(format!(
                            "{} delivered {} as {} but it was sent as {}",
                            fm(p),
                            fk(*msg),
                            fo(*ordering),
                            fo(s.ordering)
                        ))
                    });
                }
            }
            _ => {}
        }
    }
}

/// **V2 sending view**: every delivery of a message reports the view that is
/// the delivering member's current view at that moment, and that view is the
/// message's sending view (the `Send`'s view, or for a send made while
/// blocked the first view the sender installed after it). When the send is
/// unknown (V1 reports it), the deliveries must at least all report one view.
/// One violation per delivery.
pub(crate) fn v2_sending_view(ix: &Index<'_>, sink: &mut Sink) {
    let mut first_report: BTreeMap<MsgKey, (ViewIdRepr, MemberIdRepr)> = BTreeMap::new();
    for (ri, r) in ix.history.records.iter().enumerate() {
        let RecordKind::Deliver {
            msg,
            view: reported,
            ..
        } = &r.kind
        else {
            continue;
        };
        let p = r.member;
        let c = ix.cur[ri];
        let current = (c != NONE).then(|| ix.members[&p].installs[c as usize].view);
        let mut problems = Vec::new();
        match current {
            None => problems.push("before installing any view".to_string()),
            Some(cv) if cv != *reported => {
                problems.push(format!("while its current view was {}", fv(cv)))
            }
            Some(_) => {}
        }
        let actual = current.unwrap_or(*reported);
        match ix.sends.get(msg) {
            Some(s) => match s.view {
                Some(sv) if sv != actual => problems.push(format!("though it was sent in {}", fv(sv))),
                Some(_) => {}
                None => problems.push(format!(
                    "though {} never installed a view after sending it while blocked, so it never went out",
                    fm(msg.sender)
                )),
            },
            None => {
                let (v0, p0) = *first_report.entry(*msg).or_insert((*reported, p));
                if v0 != *reported {
                    problems.push(format!("while {} reported {} for it", fm(p0), fv(v0)));
                }
            }
        }
        if problems.is_empty() {
            continue;
        }
        sink.add(Property::V2, Some(r.time_ns), || Found {
            members: vec![p],
            messages: vec![*msg],
            view: Some(*reported),
            detail: format!(
                "{} delivered {} reporting view {} {}: a message is delivered in the view it was sent in",
                fm(p),
                fk(*msg),
                fv(*reported),
                problems.join(", ")
            ),
        });
    }
}

/// The sorted, deduplicated non-Unreliable messages `p` delivered in its
/// `i`-th view.
fn reliable_set(ix: &Index<'_>, p: MemberIdRepr, i: usize) -> Vec<MsgKey> {
    let mut s: Vec<MsgKey> = ix
        .delivered_in(p, i)
        .filter(|(_, class, _)| *class != UNRELIABLE)
        .map(|(k, _, _)| k)
        .collect();
    s.sort_unstable();
    s.dedup();
    s
}

/// Elements of sorted `a` not in sorted `b`.
fn minus(a: &[MsgKey], b: &[MsgKey]) -> Vec<MsgKey> {
    let mut out = Vec::new();
    let mut j = 0;
    for x in a {
        while j < b.len() && b[j] < *x {
            j += 1;
        }
        if j >= b.len() || b[j] != *x {
            out.push(*x);
        }
    }
    out
}

/// **V3 virtual synchrony**: members that install a view `v` and then the
/// same next view `w` delivered the same set of (non-Unreliable) messages in
/// `v`. Members are grouped by the set they delivered; each group that
/// differs from the largest one is one violation, naming both sides'
/// extra messages.
pub(crate) fn v3_virtual_synchrony(ix: &Index<'_>, sink: &mut Sink) {
    let mut steps: BTreeMap<(ViewIdRepr, ViewIdRepr), Vec<(MemberIdRepr, usize)>> = BTreeMap::new();
    for (p, mi) in &ix.members {
        for i in 1..mi.installs.len() {
            steps
                .entry((mi.installs[i - 1].view, mi.installs[i].view))
                .or_default()
                .push((*p, i - 1));
        }
    }
    for ((v, w), ps) in &steps {
        if ps.len() < 2 {
            continue;
        }
        let sets: Vec<Vec<MsgKey>> = ps.iter().map(|(p, i)| reliable_set(ix, *p, *i)).collect();
        let mut classes: BTreeMap<&Vec<MsgKey>, Vec<usize>> = BTreeMap::new();
        for (j, s) in sets.iter().enumerate() {
            classes.entry(s).or_default().push(j);
        }
        if classes.len() == 1 {
            continue;
        }
        // The reference: the set most members agree on (ties: the one with
        // the smallest member id).
        let reference = classes
            .values()
            .max_by_key(|js| (js.len(), std::cmp::Reverse(js[0])))
            .expect("two classes or more")
            .clone();
        let r0 = reference[0];
        let (a, ai) = ps[r0];
        for js in classes.values() {
            if js[0] == r0 {
                continue;
            }
            let others: Vec<MemberIdRepr> = js.iter().map(|j| ps[*j].0).collect();
            let (b, bi) = ps[js[0]];
            let only_a = minus(&sets[r0], &sets[js[0]]);
            let only_b = minus(&sets[js[0]], &sets[r0]);
            let t = ix.members[&a].installs[ai + 1]
                .time_ns
                .max(ix.members[&b].installs[bi + 1].time_ns);
            sink.add(Property::V3, Some(t), || {
                let bs = flist(&others, fm);
                let mut parts = Vec::new();
                if !only_a.is_empty() {
                    parts.push(format!(
                        "{} delivered {} message(s) in {} that {} did not, e.g. {}",
                        fm(a),
                        only_a.len(),
                        fv(*v),
                        bs,
                        flist(&only_a, fk)
                    ));
                }
                if !only_b.is_empty() {
                    parts.push(format!(
                        "{} delivered {} message(s) in {} that {} did not, e.g. {}",
                        bs,
                        only_b.len(),
                        fv(*v),
                        fm(a),
                        flist(&only_b, fk)
                    ));
                }
                Found {
                    members: std::iter::once(a).chain(others.iter().copied()).collect(),
                    messages: few(&only_a).into_iter().chain(few(&only_b)).collect(),
                    view: Some(*v),
                    detail: format!(
                        "{} and {} both installed {} and then {} but {}",
                        fm(a),
                        bs,
                        fv(*v),
                        fv(*w),
                        parts.join(", and ")
                    ),
                }
            });
        }
    }
}

/// **V4 self delivery**: a sender that survives the sending view `v` of one
/// of its (non-Unreliable) messages (it installs a view after `v`) delivered
/// that message in `v`.
pub(crate) fn v4_self_delivery(ix: &Index<'_>, sink: &mut Sink) {
    for (ri, r) in ix.history.records.iter().enumerate() {
        let RecordKind::Send { msg, .. } = &r.kind else {
            continue;
        };
        let Some(s) = ix
            .sends
            .get(msg)
            .filter(|s| s.rec == ri && s.ordering != UNRELIABLE)
        else {
            continue;
        };
        let (Some(i), Some(v)) = (s.install, s.view) else {
            continue;
        };
        let mi = &ix.members[&msg.sender];
        if !mi.survives(i) {
            continue;
        }
        let next = &mi.installs[i + 1];
        let how = match ix.delivered.get(&(msg.sender, *msg)).map(|d| d.install) {
            Some(j) if j == i as u32 => continue,
            Some(j) if j != NONE => {
                format!("delivered it only in {}", fv(mi.installs[j as usize].view))
            }
            _ => "never delivered it".to_string(),
        };
        sink.add(Property::V4, Some(next.time_ns), || Found {
            members: vec![msg.sender],
            messages: vec![*msg],
            view: Some(v),
            detail: format!(
                "{} sent {} ({}) in {} and survived into {} but {}: a sender delivers its own message \
                 before leaving the view",
                fm(msg.sender),
                fk(*msg),
                fo(s.ordering),
                fv(v),
                fv(next.view),
                how
            ),
        });
    }
}

/// **V5 delivery liveness**, judged only when the history says when sending
/// stopped (`quiet_at_ns`); returns whether it was judged. Every
/// (non-Unreliable) message sent before the quiet time by a member alive at
/// the end, whose sending view is that member's last view, was delivered by
/// every member alive at the end whose last view is that view. One violation
/// per message, naming who missed it.
pub(crate) fn v5_liveness(ix: &Index<'_>, sink: &mut Sink) -> bool {
    let Some(quiet_ns) = ix.history.quiet_at_ns else {
        return false;
    };
    let end_ns = ix.history.end_ns;
    let mut by_last: BTreeMap<ViewIdRepr, Vec<MemberIdRepr>> = BTreeMap::new();
    for (p, mi) in ix.alive_at_end() {
        if let Some(last) = mi.installs.last() {
            by_last.entry(last.view).or_default().push(p);
        }
    }
    for (ri, r) in ix.history.records.iter().enumerate() {
        if r.time_ns >= quiet_ns {
            break;
        }
        let RecordKind::Send { msg, .. } = &r.kind else {
            continue;
        };
        let Some(s) = ix
            .sends
            .get(msg)
            .filter(|s| s.rec == ri && s.ordering != UNRELIABLE)
        else {
            continue;
        };
        let Some(v) = s.view else { continue };
        let mi = &ix.members[&msg.sender];
        if !mi.alive_at_end || mi.installs.last().map(|l| l.view) != Some(v) {
            continue;
        }
        let missing: Vec<MemberIdRepr> = by_last[&v]
            .iter()
            .copied()
            .filter(|p| !ix.delivered.contains_key(&(*p, *msg)))
            .collect();
        if missing.is_empty() {
            continue;
        }
        sink.add(Property::V5, Some(end_ns), || Found {
            members: missing.clone(),
            messages: vec![*msg],
            view: Some(v),
            detail: format!(
                "{} ({}), sent by {} in {} at {} (before the quiet time {}), was never delivered by {}, \
                 alive in {} at the end",
                fk(*msg),
                fo(s.ordering),
                fm(msg.sender),
                fv(v),
                ft(r.time_ns),
                ft(quiet_ns),
                flist(&missing, fm),
                fv(v)
            ),
        });
    }
    true
}

#[cfg(test)]
mod tests {
    use troupe_core::Ordering;

    use crate::check::testkit::{assert_clean, assert_only, digest_of, m, v, B};
    use crate::check::{check_all, Property};
    use crate::history::{MemberIdRepr, MsgKey, RecordKind};

    fn abc() -> [MemberIdRepr; 3] {
        [m(1, 1), m(2, 1), m(3, 1)]
    }

    #[test]
    fn every_ordering_delivered_everywhere_passes() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        for o in Ordering::ALL {
            let k = h.send(a, o);
            h.deliver(&[a, b, c], k);
            let k = h.send(b, o);
            h.deliver(&[b, c, a], k);
        }
        h.install(&[a, b, c], v(2, a), &[a, b, c], Some(0));
        let k = h.send(c, Ordering::Reliable);
        h.deliver(&[a, b, c], k);
        h.quiet();
        h.heal();
        let r = assert_clean(&h.build());
        assert!(r.skipped.is_empty());
    }

    #[test]
    fn duplicate_delivery_breaks_v1() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let k = h.send(a, Ordering::Reliable);
        h.deliver(&[a, b, c, b], k);
        let r = assert_only(&h.build(), Property::V1);
        assert_eq!(
            r.violations[0].detail,
            "n2.1 delivered n1.1#1 a second time"
        );
    }

    #[test]
    fn changed_bytes_break_v1() {
        let [a, b, _] = abc();
        let (mut h, v1) = B::group(&[a, b]);
        let k = h.send(a, Ordering::Fifo);
        h.deliver(&[a], k);
        let ordering = Ordering::Fifo as u8;
        h.raw(
            b,
            RecordKind::Deliver {
                msg: k,
                sender: a,
                ordering,
                view: v1,
                digest: digest_of(k) ^ 1,
            },
        );
        let r = assert_only(&h.build(), Property::V1);
        assert!(r.violations[0].detail.contains("the bytes changed"));
    }

    #[test]
    fn delivery_of_a_message_never_sent_breaks_v1() {
        let [a, b, _] = abc();
        let (mut h, v1) = B::group(&[a, b]);
        let k = MsgKey { sender: a, n: 7 };
        h.deliver_as(a, k, v1);
        h.deliver_as(b, k, v1);
        let r = assert_only(&h.build(), Property::V1);
        assert_eq!(r.count(Property::V1), 2);
        assert!(r.violations[0].detail.contains("never sent"));
    }

    #[test]
    fn delivery_before_the_send_breaks_v1() {
        let [a, b, _] = abc();
        let (mut h, v1) = B::group(&[a, b]);
        let k = MsgKey { sender: a, n: 1 };
        h.deliver_as(b, k, v1);
        assert_eq!(h.send(a, Ordering::Reliable), k);
        h.deliver(&[a], k);
        let r = assert_only(&h.build(), Property::V1);
        assert!(r.violations[0].detail.contains("before n1.1 sent it"));
    }

    #[test]
    fn misreported_sender_or_ordering_breaks_v1() {
        let [a, b, _] = abc();
        let (mut h, v1) = B::group(&[a, b]);
        let k = h.send(a, Ordering::Reliable);
        h.deliver(&[a], k);
        let digest = digest_of(k);
        h.raw(
            b,
            RecordKind::Deliver {
                msg: k,
                sender: b,
                ordering: Ordering::Safe as u8,
                view: v1,
                digest,
            },
        );
        let r = assert_only(&h.build(), Property::V1);
        assert_eq!(r.count(Property::V1), 2);
    }

    #[test]
    fn key_sent_twice_breaks_v1() {
        let [a, b, _] = abc();
        let (mut h, v1) = B::group(&[a, b]);
        let k = h.send(a, Ordering::Reliable);
        let ordering = Ordering::Reliable as u8;
        h.raw(
            a,
            RecordKind::Send {
                msg: k,
                ordering,
                digest: digest_of(k),
                view: Some(v1),
            },
        );
        h.deliver(&[a, b], k);
        let r = assert_only(&h.build(), Property::V1);
        assert!(r.violations[0].detail.contains("same key"));
    }

    #[test]
    fn delivery_reporting_another_view_breaks_v2() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let k = h.send(a, Ordering::Reliable);
        h.deliver(&[a, c], k);
        h.deliver_as(b, k, v(9, b));
        let r = assert_only(&h.build(), Property::V2);
        assert_eq!(r.violations[0].members, vec![b]);
        assert!(r.violations[0]
            .detail
            .contains("while its current view was v1@n1.1"));
    }

    #[test]
    fn delivery_in_a_later_view_than_sent_breaks_v2() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let k = h.send(a, Ordering::Reliable);
        h.crash(a);
        h.install(&[b, c], v(2, b), &[b, c], Some(0));
        h.deliver(&[b, c], k);
        let r = assert_only(&h.build(), Property::V2);
        assert_eq!(r.count(Property::V2), 2);
        assert!(r.violations[0]
            .detail
            .contains("though it was sent in v1@n1.1"));
    }

    #[test]
    fn send_while_blocked_goes_out_in_the_next_view() {
        let [a, b, _] = abc();
        let (mut h, _) = B::group(&[a, b]);
        h.raw(a, RecordKind::Blocked);
        let k = h.send_in(a, Ordering::Total, None);
        h.install(&[a, b], v(2, a), &[a, b], Some(0));
        h.deliver(&[a, b], k);
        h.install(&[a, b], v(3, a), &[a, b], Some(0));
        assert_clean(&h.build());
    }

    #[test]
    fn survivors_delivering_different_sets_break_v3() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let k = h.send(a, Ordering::Reliable);
        h.deliver(&[a, b], k);
        h.install(&[a, b, c], v(2, a), &[a, b, c], Some(0));
        let r = assert_only(&h.build(), Property::V3);
        let x = &r.violations[0];
        assert_eq!(x.members, vec![a, c]);
        assert_eq!(x.messages, vec![k]);
        assert_eq!(
            x.detail,
            "n1.1 and n3.1 both installed v1@n1.1 and then v2@n1.1 but n1.1 delivered 1 message(s) in v1@n1.1 \
             that n3.1 did not, e.g. n1.1#1"
        );
    }

    #[test]
    fn unreliable_messages_are_exempt_from_v3_v4_v5() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let k = h.send(a, Ordering::Unreliable);
        h.deliver(&[b], k);
        let k = h.send(b, Ordering::Unreliable);
        h.install(&[a, b, c], v(2, a), &[a, b, c], Some(0));
        let _ = k;
        h.send(c, Ordering::Unreliable);
        h.quiet();
        assert_clean(&h.build());
    }

    #[test]
    fn sender_surviving_without_its_own_message_breaks_v4() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let k = h.send(a, Ordering::Fifo);
        h.install(&[a, b, c], v(2, a), &[a, b, c], Some(0));
        let r = assert_only(&h.build(), Property::V4);
        assert_eq!(r.violations[0].messages, vec![k]);
        assert!(r.violations[0].detail.contains("never delivered it"));
    }

    #[test]
    fn crashed_sender_is_not_held_to_v4() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        h.send(a, Ordering::Fifo);
        h.crash(a);
        h.install(&[b, c], v(2, b), &[b, c], Some(0));
        assert_clean(&h.build());
    }

    #[test]
    fn undelivered_message_at_end_breaks_v5() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let k = h.send(a, Ordering::Causal);
        h.deliver(&[a, b], k);
        h.quiet();
        let r = assert_only(&h.build(), Property::V5);
        assert_eq!(r.violations[0].members, vec![c]);
        assert_eq!(r.violations[0].messages, vec![k]);
    }

    #[test]
    fn v5_is_not_judged_without_a_quiet_time() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        let k = h.send(a, Ordering::Causal);
        h.deliver(&[a, b], k);
        let r = check_all(&h.build());
        assert!(r.is_ok());
        assert_eq!(r.skipped, vec![Property::M4, Property::V5, Property::K2]);
    }
}
