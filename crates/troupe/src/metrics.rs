//! Counters and gauges, published through the `metrics` facade.
//!
//! The runtime only records; the binary decides where they go (`troupe node
//! --metrics-addr` installs a Prometheus exporter). Without a recorder
//! installed, publishing costs a few atomic loads per second.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `troupe_messages_sent_total` | counter | `ordering` | application messages sent |
//! | `troupe_messages_delivered_total` | counter | `ordering` | application messages delivered |
//! | `troupe_retransmissions_total` | counter | | messages retransmitted after a NAK |
//! | `troupe_naks_sent_total` | counter | | retransmission requests sent |
//! | `troupe_view_changes_total` | counter | | views installed |
//! | `troupe_datagrams_sent_total` | counter | | datagrams built by the engine |
//! | `troupe_decode_errors_total` | counter | | datagrams refused by the decoder |
//! | `troupe_frames_dropped_total` | counter | | frames dropped by full peer queues |
//! | `troupe_connections_refused_total` | counter | | inbound connections closed for bad input |
//! | `troupe_unstable_messages` | gauge | | own messages not yet stable (send window) |
//! | `troupe_unstable_bytes` | gauge | | payload bytes of own unstable messages |
//! | `troupe_held_messages` | gauge | | messages held in all streams |
//! | `troupe_pending_sends` | gauge | | sends held during a view change |
//! | `troupe_stability_lag` | gauge | | highest minus lowest stable sequence number |
//! | `troupe_transport_queued_frames` | gauge | | frames queued for peers |
//! | `troupe_events_queued` | gauge | | events not yet read by the application |

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Once;

use troupe_core::{Ordering, Stats};

use crate::transport::TransportStats;

/// Gives every metric its help text, once per process.
pub(crate) fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use metrics::{describe_counter, describe_gauge};
        describe_counter!(
            "troupe_messages_sent_total",
            "Application messages sent, by ordering."
        );
        describe_counter!(
            "troupe_messages_delivered_total",
            "Application messages delivered, by ordering."
        );
        describe_counter!(
            "troupe_retransmissions_total",
            "Messages retransmitted in answer to a NAK."
        );
        describe_counter!("troupe_naks_sent_total", "Retransmission requests sent.");
        describe_counter!("troupe_view_changes_total", "Views installed.");
        describe_counter!(
            "troupe_datagrams_sent_total",
            "Datagrams built by the engine."
        );
        describe_counter!(
            "troupe_decode_errors_total",
            "Datagrams refused by the decoder."
        );
        describe_counter!(
            "troupe_frames_dropped_total",
            "Frames dropped because a peer queue was full."
        );
        describe_counter!(
            "troupe_connections_refused_total",
            "Inbound connections closed for bad input."
        );
        describe_gauge!(
            "troupe_unstable_messages",
            "Own messages not yet stable (the send window in use)."
        );
        describe_gauge!(
            "troupe_unstable_bytes",
            "Payload bytes of own messages not yet stable."
        );
        describe_gauge!("troupe_held_messages", "Messages held in all streams.");
        describe_gauge!("troupe_pending_sends", "Sends held during a view change.");
        describe_gauge!(
            "troupe_stability_lag",
            "Highest minus lowest stable sequence number over senders."
        );
        describe_gauge!("troupe_transport_queued_frames", "Frames queued for peers.");
        describe_gauge!(
            "troupe_events_queued",
            "Events not yet read by the application."
        );
    });
}

/// Adds the counters of `s` to `base` (used when an engine is replaced by a
/// new incarnation, so that the published counters never go backwards).
pub(crate) fn accumulate(base: &mut Stats, s: &Stats) {
    for i in 0..base.sent.len() {
        base.sent[i] += s.sent[i];
        base.delivered[i] += s.delivered[i];
    }
    base.retransmitted += s.retransmitted;
    base.naks_sent += s.naks_sent;
    base.views += s.views;
    base.datagrams_out += s.datagrams_out;
    base.decode_errors += s.decode_errors;
}

/// Publishes one snapshot: `base` holds the counters of earlier incarnations.
pub(crate) fn publish(base: &Stats, s: &Stats, t: &TransportStats, events_queued: usize) {
    for o in Ordering::ALL {
        let i = o as usize;
        metrics::counter!("troupe_messages_sent_total", "ordering" => o.name())
            .absolute(base.sent[i] + s.sent[i]);
        metrics::counter!("troupe_messages_delivered_total", "ordering" => o.name())
            .absolute(base.delivered[i] + s.delivered[i]);
    }
    metrics::counter!("troupe_retransmissions_total")
        .absolute(base.retransmitted + s.retransmitted);
    metrics::counter!("troupe_naks_sent_total").absolute(base.naks_sent + s.naks_sent);
    metrics::counter!("troupe_view_changes_total").absolute(base.views + s.views);
    metrics::counter!("troupe_datagrams_sent_total").absolute(base.datagrams_out + s.datagrams_out);
    metrics::counter!("troupe_decode_errors_total").absolute(base.decode_errors + s.decode_errors);
    metrics::counter!("troupe_frames_dropped_total")
        .absolute(t.dropped_frames.load(AtomicOrdering::Relaxed));
    metrics::counter!("troupe_connections_refused_total")
        .absolute(t.refused_connections.load(AtomicOrdering::Relaxed));
    metrics::gauge!("troupe_unstable_messages").set(s.unstable_msgs as f64);
    metrics::gauge!("troupe_unstable_bytes").set(s.unstable_bytes as f64);
    metrics::gauge!("troupe_held_messages").set(s.held_msgs as f64);
    metrics::gauge!("troupe_pending_sends").set(s.pending_sends as f64);
    metrics::gauge!("troupe_stability_lag").set(s.stability_lag as f64);
    metrics::gauge!("troupe_transport_queued_frames")
        .set(t.queued_frames.load(AtomicOrdering::Relaxed) as f64);
    metrics::gauge!("troupe_events_queued").set(events_queued as f64);
}
