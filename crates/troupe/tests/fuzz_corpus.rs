//! Replays the committed fuzz corpus of the `group_config`, `frame_reader`
//! and `frame_cut` targets (`fuzz/corpus/<target>/`, and crash regressions
//! under `fuzz/regressions/<target>/`) through the same code the targets
//! run (`fuzz/harness/runtime.rs`), without libFuzzer: the frame reader
//! inputs go over real connections to a live member on 127.0.0.1.
//!
//! The `frame_reader` seeds are written by the troupe-core replay test
//! (they are datagrams of its engine exchange, framed);
//! `TROUPE_FUZZ_WRITE_SEEDS=1 cargo test -p troupe --test fuzz_corpus --
//! --ignored write_seeds` rewrites the configuration seeds.

#[path = "../../../fuzz/harness/runtime.rs"]
#[allow(dead_code)]
mod harness;

#[path = "../../../fuzz/harness/replay.rs"]
#[allow(dead_code)]
mod replay;

use replay::{fuzz_dir, replay};

use troupe::GroupConfig;

#[test]
fn group_config_corpus_parses_without_panic() {
    assert!(
        replay("group_config", &harness::group_config) >= 1,
        "corpus missing"
    );
}

#[test]
fn frame_reader_corpus_is_refused_or_read_without_panic() {
    assert!(
        replay("frame_reader", &harness::frame_reader) >= 1,
        "corpus missing"
    );
}

#[test]
fn frame_cut_corpus_is_cut_without_loss_or_panic() {
    assert!(
        replay("frame_cut", &harness::frame_cut) >= 1,
        "corpus missing"
    );
}

/// The frame cutter on every frame reader input, at every chunk size from
/// one byte to whole: the same stream cut the same way however reads split it.
#[test]
fn frame_reader_corpus_cuts_the_same_at_every_chunk_size() {
    for (_, bytes) in replay::inputs("frame_reader") {
        for chunk in [0u8, 1, 2, 3, 5, 7, 64, 255] {
            let mut data = vec![chunk];
            data.extend_from_slice(&bytes);
            harness::frame_cut(&data);
        }
    }
}

#[test]
fn seeds_parse() {
    for (_, s) in seeds_config() {
        harness::group_config(s.as_bytes());
    }
    let full = &seeds_config()[1].1;
    let cfg = GroupConfig::from_toml(full).expect("the full seed parses");
    assert_eq!(cfg.group, "fuzz");
}

#[test]
#[ignore]
fn write_seeds() {
    if std::env::var_os("TROUPE_FUZZ_WRITE_SEEDS").is_none() {
        return;
    }
    // The frame cutter's seeds: the frame reader's, cut in 7-byte reads.
    for (path, bytes) in replay::inputs("frame_reader").into_iter().take(24) {
        let mut data = vec![7u8];
        data.extend_from_slice(&bytes);
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        replay::write_seed("frame_cut", &name.unwrap_or_default(), &data);
    }
    let dir = fuzz_dir().join("corpus").join("group_config");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, s) in seeds_config() {
        std::fs::write(dir.join(format!("seed-{name}")), s).expect("write seed");
    }
}

fn seeds_config() -> Vec<(String, String)> {
    vec![
        ("minimal".into(), "group = \"fuzz\"\n".into()),
        (
            "full".into(),
            r#"group = "fuzz"
listen = "127.0.0.1:7001"
advertise = "10.0.0.1:7001"
join = ["127.0.0.1:7002", "127.0.0.1:7003"]
node_id = 1
heartbeat_interval_ms = 100
suspect_timeout_ms = 1000
flush_timeout_ms = 1000
join_retry_interval_ms = 200
join_timeout_ms = 30000
window_msgs_max = 1024
window_bytes_max = 1048576
datagram_bytes_max = 1400
message_bytes_max = 65536
peer_queue_frames_max = 4096
peer_queue_bytes_max = 16777216
stateless = true
"#
            .into(),
        ),
        (
            "unknown-field".into(),
            "group = \"fuzz\"\nlisten = \"127.0.0.1:0\"\ncolour = 3\n".into(),
        ),
        (
            "huge-durations".into(),
            "group = \"fuzz\"\nheartbeat_interval_ms = 18446744073709551615\nsuspect_timeout_ms = 18446744073709551615\n".into(),
        ),
    ]
}
