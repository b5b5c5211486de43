//! brook-bench: a load generator and latency meter for any Kafka-protocol broker.
//!
//! It speaks the protocol itself (kafka-protocol for messages, its own
//! RecordBatch code), so it can drive a broker at millions of records a second
//! from one or two cores. Modules:
//!
//! - [`workload`]: the settings, from defaults, a TOML file and flags.
//! - [`conn`]: a framed, pipelinable connection and API version negotiation.
//! - [`admin`]: Metadata, CreateTopics and ListOffsets for setup.
//! - [`batch`]: RecordBatch v2 encoding and in-place walking, murmur2.
//! - [`producer`]: batching, linger, rate limiting, in-flight pipelining, retries.
//! - [`consumer`]: long-polling Fetch from assigned partitions, latency stamps.
//! - [`stats`]: counters, histograms and the run's clock.
//! - [`report`]: the live line, the JSON report and the summary.
//! - [`plot`]: the SVG latency-percentile plot.
//!
//! **Architecture invariant:** every loop is bounded by the clock: producers stop
//! generating at the end of the window (or on Ctrl-C) and wait at most
//! `drain_timeout` for acks; consumers stop at their target offsets or at the
//! window end plus `drain_timeout`.

mod admin;
mod batch;
mod conn;
mod consumer;
mod error;
mod plot;
mod producer;
mod report;
mod stats;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use tokio::sync::watch;

use crate::admin::{Cluster, EARLIEST, LATEST};
use crate::consumer::ConsumerSpec;
use crate::error::BenchError;
use crate::report::{Report, RunFacts};
use crate::stats::{Clock, Latency, Stats};
use crate::workload::{Mode, Overrides, Workload};

#[derive(Parser, Debug)]
#[command(
    name = "brook-bench",
    version,
    about = "Benchmark any Kafka-protocol broker: throughput, publish and end-to-end latency"
)]
struct Cli {
    /// Broker to bootstrap from, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Workload TOML file; flags override its fields.
    #[arg(long)]
    workload: Option<PathBuf>,
    /// Write the full result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a latency-percentile plot (SVG) here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print the effective workload as TOML and exit.
    #[arg(long)]
    print_workload: bool,
    /// Connect with TLS (Kafka's security.protocol=SSL), trusting the CA
    /// certificates in this PEM file.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// With --tls-ca: a client certificate chain (PEM) for brokers that
    /// require one (mTLS), with --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let w = match load_workload(&cli) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("brook-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(ca) = &cli.tls_ca {
        let client = cli.tls_cert.as_deref().zip(cli.tls_key.as_deref());
        if let Err(e) = conn::use_tls(ca, client) {
            eprintln!("brook-bench: {e}");
            return ExitCode::from(2);
        }
    }
    if cli.print_workload {
        print!("{}", toml::to_string(&w).expect("workload serializes"));
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(w.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("brook-bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(&cli, Arc::new(w)));
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match result.and_then(|(report, stats)| write_outputs(&cli, &report, &stats).map(|_| report)) {
        Ok(report) => {
            eprint!("{}", report.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("brook-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_workload(cli: &Cli) -> Result<Workload, BenchError> {
    let mut w = match &cli.workload {
        Some(path) => Workload::from_file(path)?,
        None => Workload::default(),
    };
    cli.overrides.apply(&mut w);
    w.validate()?;
    Ok(w)
}

async fn run(cli: &Cli, w: Arc<Workload>) -> Result<(Report, Arc<Stats>), BenchError> {
    let cluster = Arc::new(admin::prepare(&cli.bootstrap, &w).await?);
    eprintln!(
        "brook-bench: {} topic(s) × {} partitions on {} broker(s); mode {:?}, {} B records, acks {:?}, rate {}, warm-up {}, duration {}",
        cluster.topics.len(),
        cluster.topics[0].leaders.len(),
        cluster.brokers.len(),
        w.mode,
        serde_json::to_string(&w.record_size).unwrap_or_default(),
        w.acks,
        if w.rate == 0 {
            "max".to_string()
        } else {
            format!("{}/s", w.rate)
        },
        workload::format_duration(w.warmup),
        workload::format_duration(w.duration),
    );
    // Consumers start where the log ends now (mode both) or at its start (consume).
    let start_at = if w.mode == Mode::Consume {
        EARLIEST
    } else {
        LATEST
    };
    let mut starts = Vec::new();
    if w.mode != Mode::Produce {
        for t in &cluster.topics {
            let all: Vec<i32> = (0..t.leaders.len() as i32).collect();
            starts.push(admin::list_offsets(&cluster, t, &all, start_at, &w.client_id).await?);
        }
    }
    let (targets_tx, targets_rx) = watch::channel(None);
    if w.mode == Mode::Consume {
        targets_tx.send_replace(Some(Arc::new(log_ends(&cluster, &w).await?)));
    }

    let stats = Arc::new(Stats::new(Clock::new(w.warmup, w.duration)));
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (stats, interrupted) = (stats.clone(), interrupted.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "brook-bench: interrupted, finishing in-flight work and writing the report"
                );
                interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
                stats.request_stop();
            }
        });
    }
    let (done_tx, done_rx) = watch::channel(false);
    let live = tokio::spawn(report::live(stats.clone(), done_rx));

    let consumers = spawn_consumers(&cluster, &w, &stats, &starts, &targets_rx)?;
    let consume_started = Instant::now();
    let mut first_error = None;
    if w.mode != Mode::Consume {
        for (i, res) in spawn_producers(&cluster, &w, &stats)
            .await?
            .into_iter()
            .enumerate()
        {
            if let Err(e) = res
                .await
                .unwrap_or_else(|e| Err(BenchError::Protocol(format!("producer panicked: {e}"))))
            {
                eprintln!("brook-bench: producer {i} stopped: {e}");
                first_error.get_or_insert(e);
            }
        }
        if w.mode == Mode::Both {
            match log_ends(&cluster, &w).await {
                Ok(ends) => {
                    targets_tx.send_replace(Some(Arc::new(ends)));
                }
                Err(e) => eprintln!(
                    "brook-bench: reading log end offsets: {e}; consumers stop at their deadline"
                ),
            }
        }
    }
    for (i, c) in consumers.into_iter().enumerate() {
        if let Err(e) = c
            .await
            .unwrap_or_else(|e| Err(BenchError::Protocol(format!("consumer panicked: {e}"))))
        {
            eprintln!("brook-bench: consumer task {i} stopped: {e}");
            first_error.get_or_insert(e);
        }
    }
    let consume_elapsed = consume_started.elapsed().as_secs_f64();
    let _ = done_tx.send(true);
    let timeline = live.await.unwrap_or_default();
    if let Some(e) = &first_error {
        stats.error(format!("fatal:{e}"), 1);
    }
    let facts = RunFacts {
        bootstrap: cli.bootstrap.clone(),
        versions: cluster.versions,
        interrupted: interrupted.load(std::sync::atomic::Ordering::Relaxed),
        consume_elapsed_sec: (w.mode == Mode::Consume).then_some(consume_elapsed),
        timeline,
    };
    Ok((report::build(&w, &stats, facts), stats))
}

/// Log end offsets of every partition of every topic.
async fn log_ends(cluster: &Cluster, w: &Workload) -> Result<Vec<Vec<i64>>, BenchError> {
    let mut out = Vec::new();
    for t in &cluster.topics {
        let all: Vec<i32> = (0..t.leaders.len() as i32).collect();
        let offs = admin::list_offsets(cluster, t, &all, LATEST, &w.client_id).await?;
        out.push(offs.into_iter().map(|(_, o)| o).collect());
    }
    Ok(out)
}

type Tasks = Vec<tokio::task::JoinHandle<Result<(), BenchError>>>;

fn spawn_consumers(
    cluster: &Cluster,
    w: &Arc<Workload>,
    stats: &Arc<Stats>,
    starts: &[Vec<(i32, i64)>],
    targets: &consumer::Targets,
) -> Result<Tasks, BenchError> {
    let mut tasks = Vec::new();
    if w.mode == Mode::Produce {
        return Ok(tasks);
    }
    let n = w.consumers_per_topic as usize;
    for (ti, t) in cluster.topics.iter().enumerate() {
        for c in 0..n {
            let mine: Vec<i32> = (0..t.leaders.len() as i32)
                .filter(|p| *p as usize % n == c)
                .collect();
            for (leader, parts) in Cluster::by_leader(t, &mine) {
                let spec = ConsumerSpec {
                    topic_index: ti,
                    topic: t.name.clone(),
                    addr: cluster.addr(leader)?.to_string(),
                    positions: parts.iter().map(|&p| starts[ti][p as usize]).collect(),
                    end_to_end: w.mode == Mode::Both,
                    drain: if w.mode == Mode::Both {
                        w.drain_timeout
                    } else {
                        Default::default()
                    },
                };
                tasks.push(tokio::spawn(consumer::run(
                    spec,
                    w.clone(),
                    stats.clone(),
                    targets.clone(),
                )));
            }
        }
    }
    Ok(tasks)
}

async fn spawn_producers(
    cluster: &Cluster,
    w: &Arc<Workload>,
    stats: &Arc<Stats>,
) -> Result<Tasks, BenchError> {
    let per_producer = w.rate as f64 / (cluster.topics.len() as f64 * w.producers_per_topic as f64);
    let mut tasks = Vec::new();
    for (ti, t) in cluster.topics.iter().enumerate() {
        for p in 0..w.producers_per_topic {
            let seed = (ti as u64) << 32 | p as u64;
            let producer = producer::Producer::connect(
                cluster,
                t,
                w.clone(),
                stats.clone(),
                per_producer,
                seed,
            )
            .await?;
            tasks.push(tokio::spawn(producer.run()));
        }
    }
    Ok(tasks)
}

fn write_outputs(cli: &Cli, report: &Report, stats: &Stats) -> Result<(), BenchError> {
    let write = |path: &PathBuf, text: String| {
        std::fs::write(path, text)
            .map_err(|e| BenchError::Config(format!("writing {}: {e}", path.display())))
    };
    if let Some(path) = &cli.json {
        write(
            path,
            serde_json::to_string_pretty(report).expect("report serializes") + "\n",
        )?;
    }
    if let Some(path) = &cli.plot {
        let (publish, e2e) = (
            stats.total(Latency::Publish),
            stats.total(Latency::EndToEnd),
        );
        let title = format!(
            "{} B records, {} partitions, acks={}, rate {}",
            report.config.workload.record_size.mean_bytes(),
            report.config.workload.partitions,
            serde_json::to_value(report.config.workload.acks)
                .unwrap_or_default()
                .as_str()
                .unwrap_or("?"),
            if report.config.workload.rate == 0 {
                "max".to_string()
            } else {
                format!("{}/s", report.config.workload.rate)
            }
        );
        write(
            path,
            plot::latency_svg(&title, &[("publish", &publish), ("end-to-end", &e2e)]),
        )?;
    }
    Ok(())
}
