//! `troupe bench --failover`: how long after a crash every survivor has a
//! new view, beyond the failure detector's timeout.
//!
//! The parent starts the members (`troupe bench-member --role watch`), which
//! only report every view they install, with the system clock's time. Then,
//! again and again, it SIGKILLs one member (round robin, the coordinator
//! included), notes the time, waits until every survivor reports a view
//! without it, restarts it (a new incarnation of the same node, joining
//! through the survivors), and waits until every member is in a full view
//! again. The group is otherwise idle.
//!
//! A kill's figure is the time from the kill to the last survivor's new
//! view, minus the configured suspect timeout: what the protocol adds to the
//! detector. It can be slightly negative: the detector counts its timeout
//! from the last heartbeat heard, which came before the kill.
//!
//! A view that drops a member that was not killed is a false suspicion; the
//! run counts them (with a 100 ms timeout on an idle machine there must be
//! none).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;
use tokio::time::Instant;
use troupe::{Event, Group};

use super::{parse_port, BenchArgs, MemberArgs, FORM_TIMEOUT};
use crate::procs::{tell, unix_ns, Children};

/// Quiet time between a member's return and the next kill: the group must
/// be seen idle and whole before it is hit again.
const SETTLE: Duration = Duration::from_millis(300);

/// How long past the suspect timeout a kill may take to be noticed by every
/// survivor before the run gives up.
const DETECT_SLACK: Duration = Duration::from_secs(15);

/// Heartbeats per suspect timeout: a member is suspected after missing this
/// many in a row.
const HEARTBEATS_PER_TIMEOUT: u32 = 5;

/// What the parent knows of the members.
struct State {
    members: usize,
    /// The child running each member (index = member index = node - 1).
    child: Vec<usize>,
    /// The listening port of each member.
    port: Vec<u16>,
    /// The last view each child reported: its nodes, and when.
    view: HashMap<usize, (Vec<u64>, u64)>,
    /// The node killed and not yet back, if any.
    victim: Option<u64>,
    false_suspicions: u64,
}

impl State {
    fn node_of_child(&self, c: usize) -> Option<u64> {
        self.child
            .iter()
            .position(|&x| x == c)
            .map(|i| i as u64 + 1)
    }

    /// Handles one line of child `c`.
    fn line(&mut self, c: usize, line: &str) -> anyhow::Result<()> {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("port") => {
                if let Some(n) = self.node_of_child(c) {
                    self.port[n as usize - 1] = parse_port(words.next().unwrap_or(""))?;
                }
            }
            Some("view") => {
                let at: u64 = words.next().unwrap_or("0").parse().unwrap_or(0);
                let nodes: Vec<u64> = words
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if let Some((old, _)) = self.view.get(&c) {
                    for n in old {
                        if !nodes.contains(n) && Some(*n) != self.victim {
                            self.false_suspicions += 1;
                        }
                    }
                }
                self.view.insert(c, (nodes, at));
            }
            Some("exited") => {
                // A member that was not killed was excluded: the detector
                // suspected a live process.
                self.false_suspicions += 1;
                bail!("member {:?} was excluded: {line}", self.node_of_child(c));
            }
            _ => {}
        }
        Ok(())
    }

    /// Every member is running and its last view holds every member.
    fn whole(&self) -> bool {
        self.child.iter().all(|c| {
            self.view
                .get(c)
                .is_some_and(|(v, _)| v.len() == self.members)
        })
    }
}

/// Reads lines until `done` holds or `until` passes.
async fn pump(
    kids: &mut Children,
    st: &mut State,
    until: Instant,
    what: &str,
    done: impl Fn(&State) -> bool,
) -> anyhow::Result<()> {
    while !done(st) {
        match kids.next_output(until).await {
            Some((c, Some(l))) => st.line(c, &l)?,
            Some((c, None)) => {
                if st.child.contains(&c) {
                    bail!("member {:?} exited on its own", st.node_of_child(c));
                }
            }
            None if Instant::now() >= until => bail!("timed out waiting for {what}"),
            None => bail!("member output closed"),
        }
    }
    Ok(())
}

fn watch_args(args: &BenchArgs, index: usize, join: &[u16]) -> Vec<String> {
    let mut a = super::member_args(args, super::Role::Watch, index);
    a.push("--suspect-timeout-ms".into());
    a.push(args.suspect_timeout_ms.to_string());
    if !join.is_empty() {
        a.push("--join".into());
        a.extend(join.iter().map(|p| format!("127.0.0.1:{p}")));
    }
    a
}

/// Nearest-rank quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs `troupe bench --failover`.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.members < 3 {
        bail!("--failover needs at least 3 members (the survivors must be a majority)");
    }
    if args.kills == 0 {
        bail!("--kills must be positive");
    }
    let n = args.members;
    let timeout_ms = args.suspect_timeout_ms as f64;
    if !args.json {
        eprintln!(
            "troupe bench --failover: {n} members, {} kills, suspect timeout {} ms",
            args.kills, args.suspect_timeout_ms
        );
    }
    let mut kids = Children::new()?;
    let mut st = State {
        members: n,
        child: Vec::new(),
        port: vec![0; n],
        view: HashMap::new(),
        victim: None,
        false_suspicions: 0,
    };
    let form = Instant::now() + FORM_TIMEOUT;
    st.child
        .push(kids.spawn(&watch_args(args, 0, &[]), !args.verbose)?);
    pump(&mut kids, &mut st, form, "the first member", |s| {
        s.port[0] != 0
    })
    .await?;
    for i in 1..n {
        let first = [st.port[0]];
        st.child
            .push(kids.spawn(&watch_args(args, i, &first), !args.verbose)?);
    }
    pump(
        &mut kids,
        &mut st,
        form,
        "the first full view",
        State::whole,
    )
    .await?;

    // Per kill: (to the last survivor's view, to each survivor's view) in ms
    // beyond the timeout.
    let mut all_ms: Vec<f64> = Vec::new();
    let mut each_ms: Vec<f64> = Vec::new();
    let mut rejoin_ms: Vec<f64> = Vec::new();
    for k in 0..args.kills {
        // Idle, and watched for false suspicions, before each kill.
        let settle = Instant::now() + SETTLE;
        pump(&mut kids, &mut st, settle, "quiet", |_| false)
            .await
            .or_else(|e| {
                if Instant::now() >= settle {
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        let victim = (k + 1) % n;
        let node = victim as u64 + 1;
        let c = st.child[victim];
        st.victim = Some(node);
        st.view.remove(&c);
        let killed_at = unix_ns();
        kids.kill(c);
        let survivors: Vec<usize> = (0..n)
            .filter(|&i| i != victim)
            .map(|i| st.child[i])
            .collect();
        let until = Instant::now() + Duration::from_millis(args.suspect_timeout_ms) + DETECT_SLACK;
        let gone = |s: &State| {
            survivors.iter().all(|c| {
                s.view
                    .get(c)
                    .is_some_and(|(v, at)| !v.contains(&node) && *at >= killed_at)
            })
        };
        // Lines of the dead child may still be in the channel: the
        // survivors' views are what is waited for.
        st.child[victim] = usize::MAX;
        pump(&mut kids, &mut st, until, "the survivors' new view", gone).await?;
        let mut last = f64::NEG_INFINITY;
        for c in &survivors {
            if let Some((_, at)) = st.view.get(c) {
                let ms = at.saturating_sub(killed_at) as f64 / 1e6 - timeout_ms;
                each_ms.push(ms);
                last = last.max(ms);
            }
        }
        all_ms.push(last);
        // Back as a new incarnation, through the survivors.
        let ports: Vec<u16> = (0..n)
            .filter(|&i| i != victim)
            .map(|i| st.port[i])
            .collect();
        let restarted = Instant::now();
        st.port[victim] = 0;
        st.child[victim] = kids.spawn(&watch_args(args, victim, &ports), !args.verbose)?;
        pump(
            &mut kids,
            &mut st,
            Instant::now() + FORM_TIMEOUT,
            "the member's return",
            State::whole,
        )
        .await?;
        rejoin_ms.push(restarted.elapsed().as_secs_f64() * 1e3);
        st.victim = None;
        if !args.json {
            eprintln!(
                "  kill {}/{}: node {node}, every survivor's new view {:.1} ms after the timeout",
                k + 1,
                args.kills,
                last
            );
        }
    }
    kids.finish(Duration::from_secs(3)).await;
    for v in [&mut all_ms, &mut each_ms, &mut rejoin_ms] {
        v.sort_by(f64::total_cmp);
    }
    let r = json!({
        "mode": "failover",
        "members": n,
        "kills": args.kills,
        "suspect_timeout_ms": args.suspect_timeout_ms,
        "failover_p50_ms": quantile(&all_ms, 0.5),
        "failover_p99_ms": quantile(&all_ms, 0.99),
        "failover_max_ms": all_ms.last().copied().unwrap_or(0.0),
        "survivor_p50_ms": quantile(&each_ms, 0.5),
        "survivor_max_ms": each_ms.last().copied().unwrap_or(0.0),
        "rejoin_p50_ms": quantile(&rejoin_ms, 0.5),
        "false_suspicions": st.false_suspicions,
    });
    if args.json {
        println!("{r}");
    } else {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        println!(
            "\nfrom kill to a new view at every survivor, beyond the {} ms suspect timeout ({} kills):",
            args.suspect_timeout_ms, args.kills
        );
        println!(
            "  p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
            f("failover_p50_ms"),
            f("failover_p99_ms"),
            f("failover_max_ms")
        );
        println!(
            "  each survivor: p50 {:.1} ms, max {:.1} ms; restart to a full view again: p50 {:.0} ms",
            f("survivor_p50_ms"),
            f("survivor_max_ms"),
            f("rejoin_p50_ms")
        );
        println!(
            "false suspicions (views without a member that was not killed): {}",
            st.false_suspicions
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A member of a failover run: reports every view it installs, and nothing else.
pub(super) async fn member(args: MemberArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_millis(args.suspect_timeout_ms.max(2));
    let heartbeat = (timeout / HEARTBEATS_PER_TIMEOUT).max(Duration::from_millis(1));
    let mut b = Group::builder("troupe-bench-failover")
        .listen("127.0.0.1:0")
        .node_id(args.index as u64 + 1)
        .heartbeat_interval(heartbeat)
        .suspect_timeout(timeout)
        .join_timeout(FORM_TIMEOUT)
        .stateless();
    if !args.join.is_empty() {
        b = b.join(args.join.clone());
    }
    let group = b.start().await.context("cannot start the member")?;
    let (handle, mut events) = group.split();
    tell(&format!("port {}", handle.local_addr().port()));
    let mut stdin =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::View(v)) => {
                    let at = unix_ns();
                    let nodes: Vec<String> = v.members.iter().map(|m| m.node.to_string()).collect();
                    tell(&format!("view {at} {}", nodes.join(",")));
                }
                Some(Event::Exited(r)) => {
                    tell(&format!("exited {r:?}"));
                    return Ok(ExitCode::SUCCESS);
                }
                Some(_) => {}
                None => return Ok(ExitCode::SUCCESS),
            },
            line = stdin.next_line() => match line {
                Ok(Some(_)) => {}
                _ => return Ok(ExitCode::SUCCESS),
            },
        }
    }
}
