//! Marks (`Engine::set_mark`): K1 mark integrity, K2 mark liveness.
//!
//! The simulator's workload publishes, as its mark, how many messages it has
//! delivered, each time that changes: the values one member publishes only
//! grow, which is what lets K1 check the order they are handed on in.

use super::{fm, ft, fv, FastMap, Found, Index, Property, Sink, NONE};
use crate::history::{MemberIdRepr, RecordKind, ViewIdRepr};

/// **K1 mark integrity**: a mark member `r` is handed from `s` is one `s`
/// published before, `s` is in `r`'s current view, and the marks `r` is
/// handed from `s` within one view come in the order `s` published them,
/// each once.
pub(crate) fn k1_mark_integrity(ix: &Index<'_>, sink: &mut Sink) {
    let mut published: FastMap<(MemberIdRepr, u64), usize> = FastMap::default();
    let mut last_seen: FastMap<(MemberIdRepr, MemberIdRepr, u32), u64> = FastMap::default();
    for (ri, rec) in ix.history.records.iter().enumerate() {
        let r = rec.member;
        match rec.kind {
            RecordKind::MarkSet { value } => {
                published.entry((r, value)).or_insert(ri);
            }
            RecordKind::MarkSeen { from, value } => {
                let found = |detail: String, view: Option<ViewIdRepr>| Found {
                    members: vec![r, from],
                    messages: vec![],
                    view,
                    detail,
                };
                if !published.contains_key(&(from, value)) {
                    sink.add(Property::K1, Some(rec.time_ns), || {
                        found(
                            format!(
                                "{} was handed mark {value} from {}, which {} had not published",
                                fm(r),
                                fm(from),
                                fm(from)
                            ),
                            None,
                        )
                    });
                }
                let cur = ix.cur[ri];
                let install = (cur != NONE)
                    .then(|| ix.members.get(&r).map(|mi| &mi.installs[cur as usize]))
                    .flatten();
                let Some(install) = install else {
                    sink.add(Property::K1, Some(rec.time_ns), || {
                        found(
                            format!(
                                "{} was handed a mark from {} before it installed any view",
                                fm(r),
                                fm(from)
                            ),
                            None,
                        )
                    });
                    continue;
                };
                if !install.contains(from) {
                    sink.add(Property::K1, Some(rec.time_ns), || {
                        found(
                            format!(
                                "{} was handed a mark from {}, which is not in its view {}",
                                fm(r),
                                fm(from),
                                fv(install.view)
                            ),
                            Some(install.view),
                        )
                    });
                }
                let last = last_seen.entry((r, from, cur)).or_insert(0);
                if value <= *last {
                    let before = *last;
                    sink.add(Property::K1, Some(rec.time_ns), || {
                        found(
                            format!(
                                "{} was handed mark {value} from {} in {} after mark {before}: \
                                 marks must come in the order they were published, each once",
                                fm(r),
                                fm(from),
                                fv(install.view)
                            ),
                            Some(install.view),
                        )
                    });
                }
                *last = (*last).max(value);
            }
            _ => {}
        }
    }
}

/// **K2 mark liveness**: members alive at the end in the same last view
/// each hold, by the end, a mark of every other one at least as recent as
/// the last that member published before the quiet time (`quiet_at_ns`);
/// returns whether it was judged.
pub(crate) fn k2_mark_liveness(ix: &Index<'_>, sink: &mut Sink) -> bool {
    let Some(quiet_ns) = ix.history.quiet_at_ns else {
        return false;
    };
    // Per member alive at the end: its last view, the last mark it
    // published before the quiet time, and the best mark of each member it
    // was handed in that view.
    let mut last_view: FastMap<MemberIdRepr, (ViewIdRepr, usize)> = FastMap::default();
    for (p, mi) in ix.alive_at_end() {
        if let Some(last) = mi.installs.last() {
            last_view.insert(p, (last.view, mi.installs.len() - 1));
        }
    }
    let mut published: FastMap<MemberIdRepr, (u64, u64)> = FastMap::default();
    let mut seen: FastMap<(MemberIdRepr, MemberIdRepr), u64> = FastMap::default();
    for (ri, rec) in ix.history.records.iter().enumerate() {
        let Some(&(_, idx)) = last_view.get(&rec.member) else {
            continue;
        };
        match rec.kind {
            RecordKind::MarkSet { value } if rec.time_ns < quiet_ns => {
                published.insert(rec.member, (value, rec.time_ns));
            }
            RecordKind::MarkSeen { from, value } if ix.cur[ri] as usize == idx => {
                let e = seen.entry((rec.member, from)).or_insert(0);
                *e = (*e).max(value);
            }
            _ => {}
        }
    }
    let mut pairs: Vec<(MemberIdRepr, MemberIdRepr)> = Vec::new();
    for (r, (w, _)) in &last_view {
        for (s, (ws, _)) in &last_view {
            if r != s && w == ws && published.contains_key(s) {
                pairs.push((*r, *s));
            }
        }
    }
    pairs.sort();
    for (r, s) in pairs {
        let (want, at) = published[&s];
        let got = seen.get(&(r, s)).copied();
        if got.is_some_and(|g| g >= want) {
            continue;
        }
        let view = last_view[&r].0;
        sink.add(Property::K2, Some(ix.history.end_ns), || Found {
            members: vec![r, s],
            messages: vec![],
            view: Some(view),
            detail: format!(
                "{} published mark {want} at {} (before the quiet time {}), but {}, in the same \
                 view {} at the end, holds {}",
                fm(s),
                ft(at),
                ft(quiet_ns),
                fm(r),
                fv(view),
                got.map_or("no mark of it".to_string(), |g| format!("only mark {g}"))
            ),
        });
    }
    true
}
