//! Membership: M1 view agreement, M2 view order, M3 primary continuity, M4
//! liveness; and the failover and join latencies M4 measures.
//!
//! The predecessor of a view `w` is, for each member that installed `w` after
//! another view, the view it installed just before `w`. The index collects
//! these once ([`super::ViewInfo::pred_by`]); M2 (exclusions) and M3 (forks,
//! majorities) both read them.

use std::collections::BTreeMap;

use super::{flist, fm, ft, fv, Found, Index, MemberInfo, Property, Sink};
use crate::history::{MemberIdRepr, RecordKind, ViewIdRepr};

/// "[n1.1 n2.1 n3.1]".
fn fmembers(ms: &[MemberIdRepr]) -> String {
    format!(
        "[{}]",
        ms.iter().map(|m| fm(*m)).collect::<Vec<_>>().join(" ")
    )
}

/// **M1 view agreement**: all `ViewInstalled` records with the same view id
/// carry the same member list (compared with the first install of the view in
/// history order; one violation per disagreeing install).
pub(crate) fn m1_view_agreement(ix: &Index<'_>, sink: &mut Sink) {
    for (w, wi) in &ix.views {
        let (first, _) = wi.installers[0];
        for &(p, i) in &wi.installers[1..] {
            let inst = &ix.members[&p].installs[i];
            if inst.members == wi.members {
                continue;
            }
            sink.add(Property::M1, Some(inst.time_ns), || Found {
                members: vec![first, p],
                messages: vec![],
                view: Some(*w),
                detail: format!(
                    "{} installed {} with members {} but {} installed it with {}: members must agree on a view",
                    fm(p),
                    fv(*w),
                    fmembers(inst.members),
                    fm(first),
                    fmembers(wi.members)
                ),
            });
        }
    }
}

/// **M2 view order**: each member installs views in strictly increasing id;
/// it never installs a view that does not contain itself; and a member that
/// was excluded never reappears: if a view `w` does not contain `x` although
/// its predecessor does, no view with an id greater than `w` contains `x`
/// (the process must rejoin as a new incarnation).
pub(crate) fn m2_view_order(ix: &Index<'_>, sink: &mut Sink) {
    for (p, mi) in &ix.members {
        for (i, inst) in mi.installs.iter().enumerate() {
            if !inst.contains(*p) {
                sink.add(Property::M2, Some(inst.time_ns), || Found {
                    members: vec![*p],
                    messages: vec![],
                    view: Some(inst.view),
                    detail: format!(
                        "{} installed {} whose members {} do not include itself",
                        fm(*p),
                        fv(inst.view),
                        fmembers(inst.members)
                    ),
                });
            }
            if i == 0 {
                continue;
            }
            let prev = &mi.installs[i - 1];
            if inst.view <= prev.view {
                sink.add(Property::M2, Some(inst.time_ns), || Found {
                    members: vec![*p],
                    messages: vec![],
                    view: Some(inst.view),
                    detail: format!(
                        "{} installed {} after {}: the views a member installs must have strictly increasing ids",
                        fm(*p),
                        fv(inst.view),
                        fv(prev.view)
                    ),
                });
            }
        }
    }

    // The smallest view that excluded each member (views iterate in id
    // order, so the first entry is the smallest).
    let mut excluded_at: BTreeMap<MemberIdRepr, (ViewIdRepr, ViewIdRepr)> = BTreeMap::new();
    for (w, wi) in &ix.views {
        for pred in &wi.preds {
            for x in ix.views[pred].members {
                if !wi.contains(*x) {
                    excluded_at.entry(*x).or_insert((*w, *pred));
                }
            }
        }
    }
    for (u, ui) in &ix.views {
        for x in ui.members {
            let Some((w, pred)) = excluded_at.get(x) else {
                continue;
            };
            if u <= w {
                continue;
            }
            let (installer, _) = ui.installers[0];
            sink.add(Property::M2, Some(ix.rec(ui.first_rec).time_ns), || Found {
                members: vec![*x, installer],
                messages: vec![],
                view: Some(*u),
                detail: format!(
                    "{} was excluded by {} (it was in {}, the view before) but is a member of the later view {} \
                     installed by {}: an excluded process must rejoin as a new incarnation",
                    fm(*x),
                    fv(*w),
                    fv(*pred),
                    fv(*u),
                    fm(installer)
                ),
            });
        }
    }
}

/// Whether `x` left voluntarily at the step to the view whose first install
/// is record `w_first_rec`: it asked to leave before that. (How it then
/// learned that it was out, or whether it crashed meanwhile, does not change
/// that it announced its departure, and the group may act on it.)
fn left_voluntarily(mi: Option<&MemberInfo<'_>>, w_first_rec: usize) -> bool {
    mi.is_some_and(|mi| mi.leave_requested.is_some_and(|r| r < w_first_rec))
}

/// **M3 primary continuity**: the view history is one chain of majorities.
/// - All installers of a view that had a view before it name the same
///   predecessor (else the history forked).
/// - Two distinct views never have the same predecessor (two primaries).
/// - A view holds more than half of its predecessor's members, not counting
///   those that left voluntarily at this step (asked to leave before the view
///   was installed).
/// - At most one view starts a group (a view with no predecessor whose
///   members had installed no earlier view). A view with no predecessor some
///   of whose members had installed an earlier view (its only installers were
///   joiners, the old members crashed first) has a predecessor nobody
///   recorded, and is not judged.
pub(crate) fn m3_primary_continuity(ix: &Index<'_>, sink: &mut Sink) {
    let mut successor: BTreeMap<ViewIdRepr, ViewIdRepr> = BTreeMap::new();
    for (w, wi) in &ix.views {
        let t = ix.rec(wi.first_rec).time_ns;
        if wi.preds.len() > 1 {
            let mut by_pred: BTreeMap<ViewIdRepr, Vec<MemberIdRepr>> = BTreeMap::new();
            for (p, pred) in &wi.pred_by {
                by_pred.entry(*pred).or_default().push(*p);
            }
            sink.add(Property::M3, Some(t), || Found {
                members: wi.pred_by.iter().map(|(p, _)| *p).collect(),
                messages: vec![],
                view: Some(*w),
                detail: format!(
                    "the view history forked at {}: its installers disagree on the view before it ({})",
                    fv(*w),
                    by_pred
                        .iter()
                        .map(|(pred, ps)| format!("{} installed it after {}", flist(ps, fm), fv(*pred)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        for pred in &wi.preds {
            if let Some(w0) = successor.get(pred) {
                let (a, _) = ix.views[w0].installers[0];
                let (b, _) = wi.installers[0];
                sink.add(Property::M3, Some(t), || Found {
                    members: vec![a, b],
                    messages: vec![],
                    view: Some(*w),
                    detail: format!(
                        "the view history forked: {} (installed by {}) and {} (installed by {}) both follow {}; \
                         only one primary view may succeed a view",
                        fv(*w0),
                        fm(a),
                        fv(*w),
                        fm(b),
                        fv(*pred)
                    ),
                });
            } else {
                successor.insert(*pred, *w);
            }

            let base: Vec<MemberIdRepr> = ix.views[pred]
                .members
                .iter()
                .copied()
                .filter(|x| wi.contains(*x) || !left_voluntarily(ix.members.get(x), wi.first_rec))
                .collect();
            let kept: Vec<MemberIdRepr> =
                base.iter().copied().filter(|x| wi.contains(*x)).collect();
            if !base.is_empty() && 2 * kept.len() <= base.len() {
                sink.add(Property::M3, Some(t), || Found {
                    members: kept.clone(),
                    messages: vec![],
                    view: Some(*w),
                    detail: format!(
                        "{} {} holds only {} of the {} members of {} {} that did not leave: \
                         a view must hold a majority of the view before it",
                        fv(*w),
                        fmembers(wi.members),
                        kept.len(),
                        base.len(),
                        fv(*pred),
                        fmembers(&base)
                    ),
                });
            }
        }
    }

    let mut firsts: Vec<ViewIdRepr> = ix.first_views.iter().copied().collect();
    firsts.sort_by_key(|w| ix.views[w].first_rec);
    for w in firsts.iter().skip(1) {
        let wi = &ix.views[w];
        sink.add(Property::M3, Some(ix.rec(wi.first_rec).time_ns), || Found {
            members: wi.members.to_vec(),
            messages: vec![],
            view: Some(*w),
            detail: format!(
                "{} {} starts a second group (none of its members had a view before), besides {}: \
                 a process created a group instead of joining",
                fv(*w),
                fmembers(wi.members),
                fv(firsts[0])
            ),
        });
    }
}

/// Why `x` cannot be in a final view: how its history ends.
fn how_it_ended(ix: &Index<'_>, x: MemberIdRepr) -> String {
    let Some(mi) = ix.members.get(&x) else {
        return "has no record at all".to_string();
    };
    let last = ix.rec(*mi.records.last().expect("a member has a record"));
    match last.kind {
        RecordKind::Crashed => format!("crashed at {}", ft(last.time_ns)),
        RecordKind::Exited { left: true } => format!("left at {}", ft(last.time_ns)),
        RecordKind::Exited { left: false } => {
            format!("was told it was excluded at {}", ft(last.time_ns))
        }
        _ => "never started".to_string(),
    }
}

/// **M4 membership liveness**, judged only when the history says when the
/// network was healed (`healed_at_ns`); returns whether it was judged. At the
/// end of the run:
/// - every member alive at the end that installed a view ended in the same
///   (last) view;
/// - that final view holds no member that is not alive at the end (a crashed
///   member still in it was never excluded; one that exited was excluded by
///   a view these members did not install);
/// - every member alive at the end that started by the heal (at or before
///   `healed_at_ns`) is in it (a
///   process alive but never admitted: its join did not finish).
///
/// Members that started after the heal are not required to be admitted yet.
pub(crate) fn m4_liveness(ix: &Index<'_>, sink: &mut Sink) -> bool {
    let Some(healed_ns) = ix.history.healed_at_ns else {
        return false;
    };
    let end_ns = ix.history.end_ns;

    let mut by_last: BTreeMap<ViewIdRepr, Vec<MemberIdRepr>> = BTreeMap::new();
    for (p, mi) in ix.alive_at_end() {
        if let Some(last) = mi.installs.last() {
            by_last.entry(last.view).or_default().push(p);
        }
    }
    let final_view = by_last.keys().next_back().copied();
    if let Some(fin) = final_view {
        let in_final = &by_last[&fin];
        for (v, ps) in by_last.range(..fin) {
            sink.add(Property::M4, Some(end_ns), || Found {
                members: ps.iter().chain(in_final.first()).copied().collect(),
                messages: vec![],
                view: Some(*v),
                detail: format!(
                    "at the end {} (alive) still had {} as last view while {} had {}: \
                     after the heal, live members must converge on one view",
                    flist(ps, fm),
                    fv(*v),
                    flist(in_final, fm),
                    fv(fin)
                ),
            });
        }
        for x in ix.views[&fin].members {
            if ix.members.get(x).is_some_and(|mi| mi.alive_at_end) {
                continue;
            }
            sink.add(Property::M4, Some(end_ns), || Found {
                members: vec![*x, in_final[0]],
                messages: vec![],
                view: Some(fin),
                detail: format!(
                    "{} is still a member of the final view {} but {}: it was never excluded",
                    fm(*x),
                    fv(fin),
                    how_it_ended(ix, *x)
                ),
            });
        }
    }
    for (p, mi) in ix.alive_at_end() {
        if !mi.installs.is_empty() || mi.start_ns > healed_ns {
            continue;
        }
        sink.add(Property::M4, Some(end_ns), || Found {
            members: vec![p],
            messages: vec![],
            view: final_view,
            detail: format!(
                "{} started at {} (by the heal at {}) and is alive at the end but never installed a view: \
                 its join did not finish",
                fm(p),
                ft(mi.start_ns),
                ft(healed_ns)
            ),
        });
    }
    true
}

/// The latencies M4 is about, measured on any history (healed or not):
/// - failover: for each `Crashed` record, the time until every member alive
///   at the end that was ever in a view with the crashed member has a
///   current view without it (a member whose current view at the crash
///   already lacked it counts as done at the crash); crashes after which
///   some such member never got there, or that no such member saw, are left
///   out;
/// - join: for each member whose first view does not start a group and that
///   has a `Started` record, the time from `Started` to its first view.
///
/// Both in history order (of the crash, of the admission).
pub(crate) fn measure_failover_and_join(ix: &Index<'_>) -> (Vec<u64>, Vec<u64>) {
    let mut failover_ns = Vec::new();
    for (ri, r) in ix.history.records.iter().enumerate() {
        if r.kind != RecordKind::Crashed {
            continue;
        }
        let c = r.member;
        let mut saw = false;
        let mut done_ns = Some(r.time_ns);
        for (p, mi) in ix.alive_at_end() {
            if p == c || !mi.installs.iter().any(|inst| inst.contains(c)) {
                continue;
            }
            saw = true;
            let k = mi.installs.partition_point(|inst| inst.rec < ri);
            if k > 0 && !mi.installs[k - 1].contains(c) {
                continue;
            }
            match mi.installs[k..].iter().find(|inst| !inst.contains(c)) {
                Some(inst) => done_ns = done_ns.map(|d| d.max(inst.time_ns)),
                None => done_ns = None,
            }
        }
        if let (true, Some(d)) = (saw, done_ns) {
            failover_ns.push(d - r.time_ns);
        }
    }

    let mut joins: Vec<(usize, u64)> = Vec::new();
    for mi in ix.members.values() {
        let (Some(s), Some(first)) = (mi.started, mi.installs.first()) else {
            continue;
        };
        if ix.first_views.contains(&first.view) {
            continue;
        }
        joins.push((first.rec, first.time_ns.saturating_sub(ix.rec(s).time_ns)));
    }
    joins.sort_unstable();
    (failover_ns, joins.into_iter().map(|(_, d)| d).collect())
}

#[cfg(test)]
mod tests {
    use crate::check::testkit::{assert_clean, assert_only, m, v, B, STEP_NS};
    use crate::check::{check_all, Property};
    use crate::history::{MemberIdRepr, RecordKind};

    fn abc() -> [MemberIdRepr; 3] {
        [m(1, 1), m(2, 1), m(3, 1)]
    }

    #[test]
    fn agreeing_views_pass_m1() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        h.install(&[a, b, c], v(2, a), &[a, b, c], Some(0));
        assert_clean(&h.build());
    }

    #[test]
    fn one_view_with_two_member_lists_breaks_m1() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        h.install(&[a, c], v(2, a), &[a, b, c], Some(0));
        h.install(&[b], v(2, a), &[a, b], Some(0));
        let r = assert_only(&h.build(), Property::M1);
        assert_eq!(r.violations[0].members, vec![a, b]);
        assert!(r.violations[0]
            .detail
            .contains("n2.1 installed v2@n1.1 with members [n1.1 n2.1]"));
    }

    #[test]
    fn decreasing_view_id_breaks_m2() {
        let [a, b, _] = abc();
        let (mut h, _) = B::group(&[a, b]);
        h.install(&[a, b], v(3, a), &[a, b], Some(0));
        h.install(&[a], v(2, a), &[a, b], Some(0));
        let r = assert_only(&h.build(), Property::M2);
        assert!(r.violations[0]
            .detail
            .contains("installed v2@n1.1 after v3@n1.1"));
    }

    #[test]
    fn installing_a_view_without_itself_breaks_m2() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        h.install(&[a, b, c], v(2, a), &[a, b], Some(0));
        let r = assert_only(&h.build(), Property::M2);
        assert_eq!(r.violations[0].members, vec![c]);
    }

    #[test]
    fn reused_incarnation_after_exclusion_breaks_m2() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        h.crash(c);
        h.install(&[a, b], v(2, a), &[a, b], Some(0));
        h.install(&[a, b], v(3, a), &[a, b, c], Some(0));
        let r = assert_only(&h.build(), Property::M2);
        assert_eq!(r.violations[0].members[0], c);
        assert!(r.violations[0].detail.contains("excluded by v2@n1.1"));
    }

    #[test]
    fn rejoin_as_new_incarnation_with_state_passes_and_is_measured() {
        let [a, b, c] = abc();
        let c2 = m(3, 2);
        let (mut h, _) = B::group(&[a, b, c]);
        h.crash(c);
        h.install(&[a, b], v(2, a), &[a, b], Some(0));
        h.start(c2);
        let started = h.now();
        let v3 = v(3, a);
        h.install(&[a, b], v3, &[a, b, c2], Some(0));
        h.raw(
            a,
            RecordKind::StateProvided {
                view: v3,
                state_digest: 0,
            },
        );
        h.install(&[c2], v3, &[a, b, c2], None);
        let joined = h.now();
        h.raw(
            c2,
            RecordKind::StateInstalled {
                view: v3,
                state_digest: 0,
            },
        );
        h.heal();
        let r = assert_clean(&h.build());
        assert_eq!(r.join_ns, vec![joined - started]);
        assert_eq!(r.failover_ns, vec![2 * STEP_NS]);
    }

    #[test]
    fn two_views_after_one_predecessor_break_m3() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        h.install(&[a], v(2, a), &[a, b, c], Some(0));
        h.install(&[b, c], v(2, b), &[a, b, c], Some(0));
        let r = assert_only(&h.build(), Property::M3);
        assert_eq!(r.count(Property::M3), 1);
        assert!(
            r.violations[0].detail.contains("forked"),
            "{}",
            r.violations[0].detail
        );
    }

    #[test]
    fn installers_naming_different_predecessors_break_m3() {
        let [a, b, _] = abc();
        let (mut h, _) = B::group(&[a, b]);
        h.install(&[a], v(2, a), &[a, b], Some(0));
        h.install(&[a, b], v(3, a), &[a, b], Some(0));
        let r = assert_only(&h.build(), Property::M3);
        assert!(r
            .violations
            .iter()
            .any(|x| x.detail.contains("disagree on the view before it")));
    }

    #[test]
    fn minority_view_breaks_m3() {
        let ps: Vec<_> = (1..=5).map(|n| m(n, 1)).collect();
        let (mut h, _) = B::group(&ps);
        for p in &ps[2..] {
            h.crash(*p);
        }
        h.install(&ps[..2], v(2, ps[0]), &ps[..2], Some(0));
        let r = assert_only(&h.build(), Property::M3);
        assert!(
            r.violations[0]
                .detail
                .contains("holds only 2 of the 5 members"),
            "{}",
            r.violations[0].detail
        );
    }

    #[test]
    fn majority_view_after_crashes_passes_m3() {
        let ps: Vec<_> = (1..=5).map(|n| m(n, 1)).collect();
        let (mut h, _) = B::group(&ps);
        for p in &ps[3..] {
            h.crash(*p);
        }
        h.install(&ps[..3], v(2, ps[0]), &ps[..3], Some(0));
        assert_clean(&h.build());
    }

    #[test]
    fn voluntary_leave_from_two_members_passes_m3() {
        let [a, b, _] = abc();
        let (mut h, _) = B::group(&[a, b]);
        h.raw(b, RecordKind::LeaveRequested);
        h.install(&[a], v(2, a), &[a], Some(0));
        h.raw(b, RecordKind::Exited { left: true });
        h.heal();
        assert_clean(&h.build());
    }

    #[test]
    fn exclusion_from_two_members_is_not_a_majority_m3() {
        let [a, b, _] = abc();
        let (mut h, _) = B::group(&[a, b]);
        h.crash(b);
        h.install(&[a], v(2, a), &[a], Some(0));
        assert_only(&h.build(), Property::M3);
    }

    #[test]
    fn joiner_first_view_is_not_reported_under_m2_m3() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b]);
        h.start(c);
        let v2 = v(2, a);
        h.install(&[a, b], v2, &[a, b, c], Some(0));
        h.install(&[c], v2, &[a, b, c], None);
        h.raw(
            c,
            RecordKind::StateInstalled {
                view: v2,
                state_digest: 0,
            },
        );
        h.install(&[a, b, c], v(3, a), &[a, b, c], Some(0));
        let r = assert_clean(&h.build());
        assert_eq!(r.join_ns.len(), 1);
    }

    #[test]
    fn second_group_breaks_m3() {
        let [a, b, _] = abc();
        let mut h = B::new();
        h.start(a);
        h.install(&[a], v(1, a), &[a], Some(0));
        h.start(b);
        h.install(&[b], v(1, b), &[b], Some(0));
        let r = assert_only(&h.build(), Property::M3);
        assert!(r.violations[0].detail.contains("second group"));
    }

    #[test]
    fn excluded_crash_passes_m4_and_measures_failover() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        h.crash(c);
        let crashed = h.now();
        h.heal();
        h.raw(a, RecordKind::Blocked);
        h.install(&[a, b], v(2, a), &[a, b], Some(0));
        let r = assert_clean(&h.build());
        assert_eq!(r.failover_ns, vec![h.now() - crashed]);
        assert!(r.skipped.contains(&Property::V5) && !r.skipped.contains(&Property::M4));
    }

    #[test]
    fn crashed_member_still_in_final_view_breaks_m4() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        h.crash(c);
        h.heal();
        let r = assert_only(&h.build(), Property::M4);
        assert_eq!(r.violations[0].members[0], c);
        assert!(r.violations[0].detail.contains("crashed at"));
        assert!(r.failover_ns.is_empty());
    }

    #[test]
    fn unfinished_join_breaks_m4() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b]);
        h.start(c);
        h.heal();
        let r = assert_only(&h.build(), Property::M4);
        assert!(r.violations[0].detail.contains("never installed a view"));
    }

    #[test]
    fn live_members_ending_in_different_views_break_m4() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        h.install(&[a, b], v(2, a), &[a, b, c], Some(0));
        h.heal();
        let r = assert_only(&h.build(), Property::M4);
        assert_eq!(r.violations[0].members, vec![c, a]);
    }

    #[test]
    fn m4_is_not_judged_without_a_heal_time() {
        let [a, b, c] = abc();
        let (mut h, _) = B::group(&[a, b, c]);
        h.crash(c);
        let r = check_all(&h.build());
        assert!(r.is_ok());
        assert!(r.skipped.contains(&Property::M4));
    }
}
