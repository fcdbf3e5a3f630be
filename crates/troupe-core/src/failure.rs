//! Failure detection: every message from a member is a sign of life, and
//! acknowledgements double as heartbeats (`heartbeat_interval`). A member
//! silent for `suspect_timeout` is suspected; suspicions go to the
//! coordinator, which excludes the suspects in the next view. A suspicion is
//! never withdrawn within a view: an excluded member rejoins as a new
//! incarnation.

use crate::engine::Engine;
use crate::types::{MemberId, Time};
use crate::wire::Frame;

impl Engine {
    /// Records a sign of life.
    pub(crate) fn heard(&mut self, now: Time, from: MemberId) {
        if let Some(t) = self.last_heard.get_mut(&from) {
            *t = now;
        }
    }

    /// A long gap between two inputs means this process was paused (or
    /// starved): it cannot tell whether the others were silent, so it gives
    /// every member a fresh timeout instead of suspecting them all.
    pub(crate) fn observe_time(&mut self, now: Time) {
        let gap = now.since(self.last_input);
        if gap > self.cfg.suspect_timeout * 3 / 4 {
            for t in self.last_heard.values_mut() {
                *t = now;
            }
        }
        if now > self.last_input {
            self.last_input = now;
        }
    }

    /// Suspects the silent.
    pub(crate) fn failure_tick(&mut self, now: Time) {
        for (m, t) in &self.last_heard {
            if now.since(*t) >= self.cfg.suspect_timeout {
                self.suspected.insert(*m);
            }
        }
    }

    /// Reports suspicions to the coordinator, at most once a heartbeat. Runs
    /// last in a tick, after everything that may add a suspicion.
    pub(crate) fn report_suspicions(&mut self, now: Time) {
        if self.suspected.is_empty() || now < self.suspect_report_due {
            return;
        }
        self.suspect_report_due = now.plus(self.cfg.heartbeat_interval);
        let Some(c) = self.coordinator_guess() else {
            return;
        };
        if c == self.me {
            return;
        }
        let Some(vs) = &self.vs else { return };
        let members: Vec<MemberId> = self
            .suspected
            .iter()
            .copied()
            .filter(|m| vs.view.contains(*m))
            .collect();
        if members.is_empty() {
            return;
        }
        let id = vs.view.id;
        if let Some(addr) = self.addr_of(c) {
            self.out.unicast(c, addr, id, &Frame::Suspect { members });
        }
    }
}
