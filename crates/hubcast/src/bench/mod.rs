//! `hubcast bench`: load scenarios against one or more hubcast nodes.
//!
//! - `fanout`: subscribers over rooms, publishers at a rate or as fast as
//!   acks allow; deliveries per second, latency percentiles, messages lost
//!   (with order and duplicate checks; deliveries of publishes whose ack
//!   was lost counted apart), server CPU per delivery and memory
//!   per connection, Redis CPU per delivery when given its pid.
//! - `idle`: hold joined connections; memory per connection.
//! - `churn`: connect/join/publish/leave/disconnect loops; memory over time.
//! - `flood`: a fan-out, then the same beside clients publishing as fast as
//!   they can; latency of the well-behaved ones against the baseline.
//! - `poll-vs-ws`: the same publish stream to WebSocket and to long-polling
//!   subscribers.
//! - `faults`: nodes on a private Redis, clients on the Rust client, and a
//!   schedule of faults (kills, stops, Redis restarts, cut and slow links);
//!   a verdict on delivery, presence, readiness and memory (exit 1 when it
//!   fails). It starts its own nodes and Redis: `--url`/`--spawn` do not
//!   apply.
//!
//! Nodes are given (`--url`, `--pid`, repeatable) or started from this
//! binary (`--spawn N --serve-args "..."`), so one command reproduces a
//! figure. Connections spread over 127.0.0.1..N (`--src-ips`) to pass the
//! per-address port limit. Output: a summary, or one JSON line per run with
//! `--json`.

pub(crate) mod fanout;
pub(crate) mod faults;
pub(crate) mod hist;
pub(crate) mod net;
pub(crate) mod nodes;
pub(crate) mod process;
pub(crate) mod procfs;
pub(crate) mod scenarios;

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::{Map, Value};

use fanout::{FanoutArgs, Target};
use net::Dialer;
use nodes::Nodes;

/// `hubcast bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Subcommand, Debug)]
enum Scenario {
    /// N subscribers over R rooms, P publishers at a rate or as fast as acks allow.
    Fanout(FanoutArgs),
    /// Hold N joined connections; server memory per connection.
    Idle(scenarios::IdleArgs),
    /// Connect, join, publish, leave, disconnect in a loop; server memory over time.
    Churn(scenarios::ChurnArgs),
    /// A fan-out, then the same beside clients that publish as fast as they can.
    Flood(scenarios::FloodArgs),
    /// The same publish stream to WebSocket, then to long-polling subscribers.
    PollVsWs(FanoutArgs),
    /// Nodes on a private Redis under a schedule of faults; a verdict.
    Faults(faults::FaultsArgs),
}

/// Where the load goes and how results are shown.
#[derive(clap::Args, Debug)]
struct Common {
    /// WebSocket URL of a node; repeat for several (connection i goes to node i mod N) [default: ws://127.0.0.1:8080/ws].
    #[arg(long = "url", value_name = "URL", global = true)]
    urls: Vec<String>,
    /// Server process to measure; repeat for several (CPU and memory are summed).
    #[arg(long = "pid", value_name = "PID", global = true)]
    pids: Vec<u32>,
    /// Start N nodes of this binary on free loopback ports (instead of --url; their pids are measured).
    #[arg(long, value_name = "N", global = true, conflicts_with_all = ["urls", "pids"])]
    spawn: Option<usize>,
    /// Settings for the spawned nodes, as one string: --serve-args "--broker redis".
    #[arg(long, value_name = "ARGS", global = true, allow_hyphen_values = true)]
    serve_args: Option<String>,
    /// Redis (or NATS) server pid: adds its CPU per delivery (as `redis_cpu_*`).
    #[arg(long, visible_alias = "broker-pid", value_name = "PID", global = true)]
    redis_pid: Option<u32>,
    /// Spread connections over source addresses 127.0.0.1..N (1: no binding).
    #[arg(long, default_value_t = 20, global = true)]
    src_ips: u32,
    /// Connection token for servers that require one.
    #[arg(
        long,
        env = "HUBCAST_BENCH_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// API key for /api/* (HTTP publishing, polls), when the server has keys.
    #[arg(
        long,
        env = "HUBCAST_BENCH_API_KEY",
        hide_env_values = true,
        global = true
    )]
    api_key: Option<String>,
    /// Print one JSON line per run instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    /// Name printed with the results.
    #[arg(long, default_value = "", global = true)]
    label: String,
}

/// Rounds a reported figure to `places` decimals.
pub(crate) fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// Runs a scenario; the exit code says whether it could run at all (loss
/// is reported, not an exit status: a benchmark measures).
pub fn main(args: BenchArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hubcast bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubcast bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let c = &args.common;
    if let Scenario::Faults(a) = &args.scenario {
        let label = if c.label.is_empty() {
            "faults".to_string()
        } else {
            format!("{}/faults", c.label)
        };
        let (r, passed) = faults::run(a, &label).await?;
        if c.json {
            println!("{}", Value::Object(r));
        } else {
            print_summary(&r);
        }
        anyhow::ensure!(passed, "the fault run failed its checks (see `failures`)");
        return Ok(());
    }
    let nodes = match c.spawn {
        Some(n) => {
            let serve_args: Vec<String> = c
                .serve_args
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect();
            Nodes::spawn(n.max(1), &serve_args).await?
        }
        None => Nodes::given(&c.urls, &c.pids)?,
    };
    let target = Target {
        nodes: Arc::new(nodes),
        dialer: Dialer {
            src_ips: c.src_ips.max(1),
            token: c.token.clone(),
            api_key: c.api_key.clone(),
        },
        redis_pid: c.redis_pid,
    };
    let label = if c.label.is_empty() {
        String::new()
    } else {
        format!("{}/", c.label)
    };
    let results = match &args.scenario {
        Scenario::Fanout(a) => {
            vec![fanout::run(&target, a, &format!("{label}fanout"), None).await?]
        }
        Scenario::Idle(a) => vec![scenarios::idle(&target, a, &format!("{label}idle")).await?],
        Scenario::Churn(a) => vec![scenarios::churn(&target, a, &format!("{label}churn")).await],
        Scenario::Flood(a) => scenarios::flood(&target, a, &label).await?,
        Scenario::PollVsWs(a) => scenarios::poll_vs_ws(&target, a, &label).await?,
        Scenario::Faults(_) => Vec::new(),
    };
    drop(target);
    for r in &results {
        if c.json {
            println!("{}", Value::Object(r.clone()));
        } else {
            print_summary(r);
        }
    }
    if !c.json && results.len() == 2 {
        print_comparison(&results[0], &results[1]);
    }
    Ok(())
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_summary(r: &Map<String, Value>) {
    println!("{}", r.get("label").map(show).unwrap_or_default());
    for (k, v) in r {
        if k != "label" {
            println!("  {k:<28} {}", show(v));
        }
    }
}

/// Two runs side by side (flood: baseline and flood; poll-vs-ws: ws and poll).
fn print_comparison(a: &Map<String, Value>, b: &Map<String, Value>) {
    let keys = [
        "deliveries_per_s",
        "lost",
        "duplicates",
        "unacked_deliveries",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "server_cpu_us_per_delivery",
        "requests_per_delivery",
        "sub_bytes_in_per_delivery",
        "sub_bytes_out_per_delivery",
    ];
    let name = |r: &Map<String, Value>| r.get("label").map(show).unwrap_or_default();
    println!(
        "\n{:<28} {:>16} {:>16} {:>8}",
        "figure",
        name(a),
        name(b),
        "ratio"
    );
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x.is_none() && y.is_none() {
            continue;
        }
        let ratio = match (x.and_then(Value::as_f64), y.and_then(Value::as_f64)) {
            (Some(x), Some(y)) if x != 0.0 => format!("{:.2}", y / x),
            _ => "-".into(),
        };
        println!(
            "{k:<28} {:>16} {:>16} {ratio:>8}",
            x.map(show).unwrap_or_else(|| "-".into()),
            y.map(show).unwrap_or_else(|| "-".into())
        );
    }
}
