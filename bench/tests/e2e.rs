//! Runs brook-bench against the real broker binary and checks that every
//! record produced was consumed. No timing assertions.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `BROOK_BIN`, else the broker built in this test's own profile
/// (`target/release/brook` for `cargo test --release`), which must be newer
/// than every source file it is built from: a stale binary would test old code.
fn broker_binary() -> PathBuf {
    if let Ok(p) = std::env::var("BROOK_BIN") {
        return PathBuf::from(p);
    }
    let root = workspace_root();
    let target =
        std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), |t| root.join(t));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let bin = target.join(profile).join("brook");
    let flag = if profile == "release" {
        " --release"
    } else {
        ""
    };
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build it first: cargo build{flag} -p brook",
                bin.display()
            )
        });
    let newest = [
        "src",
        "engine/src",
        "net/src",
        "vendor",
        "Cargo.toml",
        "Cargo.lock",
    ]
    .iter()
    .filter_map(|p| newest_mtime(&root.join(p)))
    .max();
    assert!(
        newest.is_none_or(|n| n <= built),
        "{} is older than its sources; rebuild it: cargo build{flag} -p brook",
        bin.display()
    );
    bin
}

/// The latest modification time of a file or of any file under a directory.
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| newest_mtime(&e.ok()?.path()))
        .max()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The broker process; SIGTERMed (or killed, if a test failed) on drop.
struct Broker {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let data = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(broker_binary())
            .args([
                "--data-dir",
                data.path().to_str().unwrap(),
                "--listen",
                &addr,
            ])
            .args(["--shards", "2", "--no-pin"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting brook");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("brook ready") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!("brook did not print `brook ready` within 30 s");
        }
        Broker {
            child,
            addr,
            _data: data,
        }
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "sending SIGTERM");
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "brook exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("brook did not exit within 30 s of SIGTERM");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn bench(addr: &str, json: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_brook-bench"))
        .args([
            "--bootstrap",
            addr,
            "--json",
            json.to_str().unwrap(),
            "--threads",
            "1",
        ])
        .args(args)
        .output()
        .expect("running brook-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "brook-bench failed:\n{stderr}");
    let text = std::fs::read_to_string(json).expect("JSON report written");
    serde_json::from_str(&text).expect("JSON report parses")
}

fn num(v: &serde_json::Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {path} in {v:#}"))
}

#[test]
fn every_record_produced_is_consumed() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("both.json");
    let plot = dir.path().join("latency.svg");
    let r = bench(
        &broker.addr,
        &json,
        &[
            "--topic",
            "e2e",
            "--partitions",
            "3",
            "--record-size",
            "16..300",
            "--rate",
            "5000",
            "--compression",
            "lz4",
            "--key-distribution",
            "round-robin",
            "--key-count",
            "7",
            "--warmup",
            "500ms",
            "--duration",
            "2s",
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    let produced = num(&r, "/produce/records_total");
    assert!(produced > 0.0, "nothing produced: {r:#}");
    assert_eq!(num(&r, "/consume/records_total"), produced, "{r:#}");
    assert_eq!(num(&r, "/unconsumed_records"), 0.0);
    assert_eq!(num(&r, "/produce/failed_records"), 0.0);
    assert_eq!(num(&r, "/errors/total"), 0.0, "{r:#}");
    assert!(num(&r, "/end_to_end/latency_ms/count") > 0.0);
    num(&r, "/produce/records_per_sec");
    num(&r, "/end_to_end/latency_ms/p99");
    assert!(
        std::fs::read_to_string(&plot)
            .unwrap()
            .contains("<polyline")
    );

    // Catch-up read of the same topic from the earliest offset sees all of it.
    let json = dir.path().join("consume.json");
    let c = bench(
        &broker.addr,
        &json,
        &["--topic", "e2e", "--mode", "consume", "--duration", "20s"],
    );
    assert_eq!(num(&c, "/consume/records_total"), produced, "{c:#}");
    assert_eq!(num(&c, "/errors/total"), 0.0, "{c:#}");

    broker.stop();
}
