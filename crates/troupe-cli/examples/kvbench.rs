//! `kvbench`: a load generator for etcd v3 API servers (etcd itself and
//! `troupe serve`), used by `bench/etcd/run.sh` (issue 7).
//!
//! It speaks to the servers through the `etcd-client` crate only, so the
//! same binary measures both systems the same way.
//!
//! ```text
//! cargo run --release -p troupe-cli --example kvbench -- \
//!     --endpoints 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 \
//!     --mode put --clients 64 --seconds 10 --value-size 256 --json
//! ```
//!
//! Modes:
//!
//! - `seq-put`: one client, one put at a time (the `--clients` flag is
//!   ignored); the figure of interest is the latency.
//! - `put`: `--clients` clients, each looping puts on keys nobody else
//!   writes (`kvbench/put/<client>/<counter>`), one outstanding put each.
//! - `get`: `--keys` keys are written first, then `--clients` clients loop
//!   linearizable gets (the etcd default: `serializable` is false) on keys
//!   picked at random among them.
//!
//! Client `i` connects to endpoint `i mod n`, with a connection of its own
//! (an `etcd_client::Client` per client; gRPC would multiplex them over one,
//! but separate connections spread the load over the members as etcd's own
//! `benchmark` tool does with `--conns`).
//!
//! Every run has a warm-up (`--warmup`, 1 s by default) whose operations are
//! not counted, then the measured window of `--seconds`. An operation counts
//! when it completes inside the window; its latency goes into an HDR
//! histogram (microseconds). A request that fails or takes longer than
//! `--op-timeout` counts as an error and is not retried.
//!
//! The summary goes to stderr; with `--json`, one JSON line goes to stdout
//! with `mode, clients, ops, ops_per_sec, p50_us, p99_us, errors` (and a few
//! more fields: `system`, `seconds`, `value_size`, `p999_us`, `max_us`,
//! `mean_us`, `endpoints`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use etcd_client::{Client, ConnectOptions, GetOptions, KvClient};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One client, one put at a time.
    SeqPut,
    /// N clients, each looping puts on its own keys.
    Put,
    /// N clients, each looping linearizable gets on pre-written keys.
    Get,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::SeqPut => "seq-put",
            Mode::Put => "put",
            Mode::Get => "get",
        }
    }
}

/// Load generator for etcd v3 API servers.
#[derive(Parser, Debug)]
#[command(about = "Load generator for etcd v3 API servers (etcd and troupe serve)")]
struct Args {
    /// Comma-separated host:port (or http://host:port) client endpoints.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// seq-put, put or get.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Concurrent clients (put and get; seq-put always uses one).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up before the window, in seconds (not counted).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Keys written before a get run, and read at random during it.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// A request taking longer than this (ms) counts as an error.
    #[arg(long, default_value_t = 5000)]
    op_timeout_ms: u64,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// A label copied into the JSON line (e.g. etcd or troupe).
    #[arg(long, default_value = "")]
    system: String,
    /// Print one JSON line with the results on stdout.
    #[arg(long)]
    json: bool,
}

/// One client's measurements.
struct Tally {
    ops: u64,
    errors: u64,
    hist: Histogram<u64>,
}

impl Tally {
    fn new() -> Result<Tally> {
        Ok(Tally {
            ops: 0,
            errors: 0,
            // 1 µs .. 1 h, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .context("creating a histogram")?,
        })
    }
}

/// splitmix64: enough randomness to pick keys, without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn get_key(i: usize) -> String {
    format!("kvbench/get/{i:08}")
}

async fn connect(endpoint: &str) -> Result<KvClient> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(30));
    let client = Client::connect([endpoint], Some(opts))
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    Ok(client.kv_client())
}

/// The timeline every client follows: measuring starts at `start` and
/// stops at `end`.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// Runs one client until the window closes.
async fn client_loop(
    id: usize,
    mut kv: KvClient,
    mode: Mode,
    value: Arc<Vec<u8>>,
    keys: usize,
    op_timeout: Duration,
    w: Window,
) -> Result<Tally> {
    let mut t = Tally::new()?;
    let mut rng = Rng(0x5eed ^ (id as u64).wrapping_mul(0x1000_0000_01b3));
    let mut seq: u64 = 0;
    loop {
        let began = Instant::now();
        if began >= w.end {
            break;
        }
        let res = match mode {
            Mode::SeqPut | Mode::Put => {
                let key = format!("kvbench/put/{id:03}/{seq:010}");
                seq += 1;
                tokio::time::timeout(op_timeout, kv.put(key, value.as_slice(), None))
                    .await
                    .map(|r| r.map(|_| ()))
            }
            Mode::Get => {
                let key = get_key((rng.next() % keys as u64) as usize);
                // GetOptions::new() leaves serializable off: a linearizable read.
                tokio::time::timeout(op_timeout, kv.get(key, Some(GetOptions::new())))
                    .await
                    .map(|r| {
                        r.and_then(|resp| {
                            if resp.kvs().len() == 1 {
                                Ok(())
                            } else {
                                Err(etcd_client::Error::InvalidArgs(format!(
                                    "expected one key, got {}",
                                    resp.kvs().len()
                                )))
                            }
                        })
                    })
            }
        };
        let done = Instant::now();
        let in_window = began >= w.start && done <= w.end;
        match res {
            Ok(Ok(())) => {
                if in_window {
                    t.ops += 1;
                    let us = done.duration_since(began).as_micros().max(1) as u64;
                    t.hist.saturating_record(us);
                }
            }
            Ok(Err(e)) => {
                if in_window {
                    t.errors += 1;
                }
                if t.errors <= 3 {
                    eprintln!("kvbench: client {id}: {e}");
                }
                // Do not spin on a server that refuses everything.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                if in_window {
                    t.errors += 1;
                }
                if t.errors <= 3 {
                    eprintln!("kvbench: client {id}: no answer within {op_timeout:?}");
                }
            }
        }
    }
    Ok(t)
}

/// Writes the keys a get run reads, `clients` at a time.
async fn prefill(kvs: &[KvClient], keys: usize, value: Arc<Vec<u8>>) -> Result<()> {
    let mut set = JoinSet::new();
    let n = kvs.len().max(1);
    for (c, kv) in kvs.iter().enumerate() {
        let mut kv = kv.clone();
        let value = value.clone();
        set.spawn(async move {
            let mut i = c;
            while i < keys {
                tokio::time::timeout(
                    Duration::from_secs(30),
                    kv.put(get_key(i), value.as_slice(), None),
                )
                .await
                .context("prefill put timed out")?
                .context("prefill put")?;
                i += n;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("prefill task")??;
    }
    Ok(())
}

async fn run(args: Args) -> Result<serde_json::Value> {
    if args.endpoints.is_empty() {
        bail!("--endpoints is empty");
    }
    let clients = if args.mode == Mode::SeqPut {
        1
    } else {
        args.clients.max(1)
    };
    if args.mode == Mode::Get && args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    let value = Arc::new(vec![b'v'; args.value_size]);

    let mut kvs = Vec::with_capacity(clients);
    for i in 0..clients {
        kvs.push(connect(&args.endpoints[i % args.endpoints.len()]).await?);
    }
    if args.mode == Mode::Get {
        let t = Instant::now();
        prefill(&kvs, args.keys, value.clone()).await?;
        eprintln!(
            "kvbench: wrote {} keys in {:.1} s",
            args.keys,
            t.elapsed().as_secs_f64()
        );
    }

    let start = Instant::now() + Duration::from_secs(args.warmup);
    let w = Window {
        start,
        end: start + Duration::from_secs(args.seconds),
    };
    let op_timeout = Duration::from_millis(args.op_timeout_ms.max(1));
    let mut set = JoinSet::new();
    for (id, kv) in kvs.into_iter().enumerate() {
        set.spawn(client_loop(
            id,
            kv,
            args.mode,
            value.clone(),
            args.keys,
            op_timeout,
            w,
        ));
    }
    let mut total = Tally::new()?;
    while let Some(r) = set.join_next().await {
        let t = r.context("client task")??;
        total.ops += t.ops;
        total.errors += t.errors;
        total.hist.add(&t.hist).context("merging histograms")?;
    }

    let secs = args.seconds as f64;
    let h = &total.hist;
    let q = |x: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(x)
        }
    };
    let out = serde_json::json!({
        "system": args.system,
        "mode": args.mode.name(),
        "clients": clients,
        "seconds": args.seconds,
        "value_size": args.value_size,
        "ops": total.ops,
        "ops_per_sec": (total.ops as f64 / secs * 10.0).round() / 10.0,
        "p50_us": q(0.5),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "max_us": h.max(),
        "mean_us": (h.mean() * 10.0).round() / 10.0,
        "errors": total.errors,
        "endpoints": args.endpoints,
    });
    Ok(out)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let json = args.json;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let out = rt.block_on(run(args))?;
    eprintln!(
        "kvbench: {}{} mode={} clients={} ops={} ops/s={} p50={}us p99={}us p99.9={}us max={}us errors={}",
        out["system"].as_str().unwrap_or(""),
        if out["system"].as_str().unwrap_or("").is_empty() { "" } else { ":" },
        out["mode"].as_str().unwrap_or(""),
        out["clients"],
        out["ops"],
        out["ops_per_sec"],
        out["p50_us"],
        out["p99_us"],
        out["p999_us"],
        out["max_us"],
        out["errors"],
    );
    if json {
        println!("{out}");
    }
    Ok(())
}
