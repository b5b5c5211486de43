//! The workload: what to produce and consume, and how hard.
//!
//! Precedence, lowest first: [`Workload::default`], then a TOML file
//! (`--workload FILE`), then command-line flags ([`Overrides`]). Every field has
//! a default, so the file may be empty and the flags may be absent.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::BenchError;

/// What the run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Produce and consume at the same time (end-to-end latency).
    Both,
    /// Produce only (publish latency and throughput).
    Produce,
    /// Catch-up read of an existing backlog from the earliest offset.
    Consume,
}

/// How records get keys (and so partitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    /// No key: batches go to partitions in turn (Kafka's sticky partitioner).
    None,
    /// A random 16-byte key per record, partitioned by murmur2 like Kafka.
    Random,
    /// Keys `key-0` .. `key-{N-1}` in turn, partitioned by murmur2.
    RoundRobin,
}

/// Compression codec of produced record batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// The attribute bits of a RecordBatch.
    pub fn attribute(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }
}

/// Produce acknowledgement level, as Kafka's `acks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    /// The wire value of the Produce request's `acks` field.
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "0" | "none" => Ok(Acks::None),
            "1" | "leader" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("acks must be 0, 1 or all, not {other:?}")),
        }
    }
}

impl Serialize for Acks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        })
    }
}

impl<'de> Deserialize<'de> for Acks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = IntOrStr::deserialize(d)?;
        raw.text().parse().map_err(serde::de::Error::custom)
    }
}

/// Record value size: fixed, or uniform over `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordSize {
    pub min_bytes: usize,
    pub max_bytes: usize,
}

impl RecordSize {
    pub fn fixed(bytes: usize) -> Self {
        RecordSize {
            min_bytes: bytes,
            max_bytes: bytes,
        }
    }
    pub fn mean_bytes(self) -> f64 {
        (self.min_bytes + self.max_bytes) as f64 / 2.0
    }
}

impl FromStr for RecordSize {
    type Err = String;
    /// `100` or `100..1000` (inclusive).
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad record size {s:?}: expected N or MIN..MAX"))
        };
        let size = match s.split_once("..") {
            Some((lo, hi)) => RecordSize {
                min_bytes: num(lo)?,
                max_bytes: num(hi.trim_start_matches('='))?,
            },
            None => RecordSize::fixed(num(s)?),
        };
        if size.min_bytes > size.max_bytes {
            return Err(format!("record size {s:?}: min exceeds max"));
        }
        Ok(size)
    }
}

impl Serialize for RecordSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.min_bytes == self.max_bytes {
            s.serialize_u64(self.min_bytes as u64)
        } else {
            s.serialize_str(&format!("{}..{}", self.min_bytes, self.max_bytes))
        }
    }
}

impl<'de> Deserialize<'de> for RecordSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IntOrStr::deserialize(d)?
            .text()
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrStr {
    Int(i64),
    Str(String),
}

impl IntOrStr {
    fn text(self) -> String {
        match self {
            IntOrStr::Int(i) => i.to_string(),
            IntOrStr::Str(s) => s,
        }
    }
}

/// Parses `20s`, `500ms`, `2m`, `1h`, `1m30s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs, s);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} lacks a unit (ms, s, m, h)"))?;
        let (num, tail) = rest.split_at(split);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
        let secs = match unit {
            "us" | "µs" => n / 1e6,
            "ms" => n / 1e3,
            "s" => n,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(format!("duration {s:?}: unknown unit {unit:?}")),
        };
        total += secs_to_duration(secs, s)?;
        rest = next;
    }
    Ok(total)
}

fn secs_to_duration(secs: f64, s: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

mod duration_serde {
    use super::*;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse_duration(&IntOrStr::deserialize(d)?.text()).map_err(serde::de::Error::custom)
    }
}

/// One benchmark run's settings. Field names are the TOML keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    pub mode: Mode,
    /// Topic name; with `topics > 1`, names are `{topic}-0`, `{topic}-1`, …
    pub topic: String,
    pub topics: u32,
    pub partitions: u32,
    pub replication_factor: i16,
    /// Create missing topics with CreateTopics.
    pub create_topics: bool,
    pub record_size: RecordSize,
    pub key_distribution: KeyDistribution,
    /// Distinct keys for `round-robin`.
    pub key_count: u32,
    pub producers_per_topic: u32,
    pub consumers_per_topic: u32,
    /// Kafka's batch.size: bytes of records per partition batch.
    pub batch_size: usize,
    pub linger_ms: u64,
    pub compression: Codec,
    pub acks: Acks,
    /// Target records/s over all producers; 0 = as fast as possible (closed loop).
    pub rate: u64,
    #[serde(with = "duration_serde")]
    pub warmup: Duration,
    #[serde(with = "duration_serde")]
    pub duration: Duration,
    /// Produce requests in flight per connection.
    pub max_in_flight: usize,
    pub request_timeout_ms: i32,
    pub fetch_max_wait_ms: i32,
    pub fetch_min_bytes: i32,
    pub fetch_max_bytes: i32,
    pub fetch_partition_max_bytes: i32,
    /// How long consumers keep reading after producers stop, to catch the tail.
    #[serde(with = "duration_serde")]
    pub drain_timeout: Duration,
    /// Tokio worker threads.
    pub threads: usize,
    pub client_id: String,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            mode: Mode::Both,
            topic: "brook-bench".into(),
            topics: 1,
            partitions: 8,
            replication_factor: 1,
            create_topics: true,
            record_size: RecordSize::fixed(100),
            key_distribution: KeyDistribution::None,
            key_count: 1000,
            producers_per_topic: 1,
            consumers_per_topic: 1,
            batch_size: 1 << 20,
            linger_ms: 1,
            compression: Codec::None,
            acks: Acks::All,
            rate: 0,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(60),
            max_in_flight: 5,
            request_timeout_ms: 30_000,
            fetch_max_wait_ms: 500,
            fetch_min_bytes: 1,
            fetch_max_bytes: 64 << 20,
            fetch_partition_max_bytes: 4 << 20,
            drain_timeout: Duration::from_secs(10),
            threads: 2,
            client_id: "brook-bench".into(),
        }
    }
}

impl Workload {
    pub fn from_toml(text: &str) -> Result<Self, BenchError> {
        toml::from_str(text).map_err(|e| BenchError::Config(format!("workload: {e}")))
    }

    pub fn from_file(path: &Path) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BenchError::Config(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| BenchError::Config(format!("{}: {e}", path.display())))
    }

    pub fn topic_names(&self) -> Vec<String> {
        if self.topics == 1 {
            vec![self.topic.clone()]
        } else {
            (0..self.topics)
                .map(|i| format!("{}-{i}", self.topic))
                .collect()
        }
    }

    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::Config(m.to_string()));
        if self.topics == 0 || self.partitions == 0 {
            return bad("topics and partitions must be at least 1");
        }
        if self.mode != Mode::Consume && self.producers_per_topic == 0 {
            return bad("producers_per_topic must be at least 1 when producing");
        }
        if self.mode != Mode::Produce && self.consumers_per_topic == 0 {
            return bad("consumers_per_topic must be at least 1 when consuming");
        }
        if self.max_in_flight == 0 || self.threads == 0 || self.batch_size == 0 {
            return bad("max_in_flight, threads and batch_size must be at least 1");
        }
        if self.key_distribution == KeyDistribution::RoundRobin && self.key_count == 0 {
            return bad("key_count must be at least 1 for round-robin keys");
        }
        Ok(())
    }
}

/// Flags that override workload fields; each is `None` unless given.
#[derive(Args, Debug, Default, Clone)]
pub struct Overrides {
    /// both | produce | consume
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<Mode>,
    #[arg(long)]
    pub topic: Option<String>,
    #[arg(long)]
    pub topics: Option<u32>,
    /// Partitions per topic (created with this many if missing).
    #[arg(long)]
    pub partitions: Option<u32>,
    #[arg(long)]
    pub replication_factor: Option<i16>,
    /// Do not create missing topics.
    #[arg(long)]
    pub no_create: bool,
    /// Value bytes: N, or MIN..MAX for a uniform distribution.
    #[arg(long)]
    pub record_size: Option<RecordSize>,
    /// none | random | round-robin
    #[arg(long, value_parser = parse_keys)]
    pub key_distribution: Option<KeyDistribution>,
    #[arg(long)]
    pub key_count: Option<u32>,
    /// Producers per topic.
    #[arg(long)]
    pub producers: Option<u32>,
    /// Consumers per topic.
    #[arg(long)]
    pub consumers: Option<u32>,
    /// Bytes of records per partition batch (batch.size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// none | gzip | snappy | lz4 | zstd
    #[arg(long, value_parser = parse_codec)]
    pub compression: Option<Codec>,
    /// 0 | 1 | all
    #[arg(long)]
    pub acks: Option<Acks>,
    /// Target records/s over all producers (0 = as fast as possible).
    #[arg(long)]
    pub rate: Option<u64>,
    /// e.g. 5s; excluded from the figures.
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Measured time after the warm-up, e.g. 20s, 2m.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Produce requests in flight per connection.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    #[arg(long, value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Tokio worker threads.
    #[arg(long)]
    pub threads: Option<usize>,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    enum_from_str(s)
}
fn parse_keys(s: &str) -> Result<KeyDistribution, String> {
    enum_from_str(s)
}
fn parse_codec(s: &str) -> Result<Codec, String> {
    enum_from_str(s)
}

fn enum_from_str<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, String> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s))
        .map_err(|e| e.to_string())
}

impl Overrides {
    /// Applies the flags that were given on top of `w`.
    pub fn apply(&self, w: &mut Workload) {
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        set(&mut w.mode, &self.mode);
        set(&mut w.topic, &self.topic);
        set(&mut w.topics, &self.topics);
        set(&mut w.partitions, &self.partitions);
        set(&mut w.replication_factor, &self.replication_factor);
        if self.no_create {
            w.create_topics = false;
        }
        set(&mut w.record_size, &self.record_size);
        set(&mut w.key_distribution, &self.key_distribution);
        set(&mut w.key_count, &self.key_count);
        set(&mut w.producers_per_topic, &self.producers);
        set(&mut w.consumers_per_topic, &self.consumers);
        set(&mut w.batch_size, &self.batch_size);
        set(&mut w.linger_ms, &self.linger_ms);
        set(&mut w.compression, &self.compression);
        set(&mut w.acks, &self.acks);
        set(&mut w.rate, &self.rate);
        set(&mut w.warmup, &self.warmup);
        set(&mut w.duration, &self.duration);
        set(&mut w.max_in_flight, &self.max_in_flight);
        set(&mut w.drain_timeout, &self.drain_timeout);
        set(&mut w.threads, &self.threads);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Workload::from_toml("").unwrap(), Workload::default());
    }

    #[test]
    fn file_fields_parse() {
        let w = Workload::from_toml(
            r#"
            mode = "produce"
            topic = "t"
            partitions = 3
            record_size = "100..1000"
            key_distribution = "round-robin"
            key_count = 7
            compression = "zstd"
            acks = 1
            rate = 50000
            warmup = "500ms"
            duration = 30
            linger_ms = 5
            "#,
        )
        .unwrap();
        assert_eq!(w.mode, Mode::Produce);
        assert_eq!(w.partitions, 3);
        assert_eq!(
            w.record_size,
            RecordSize {
                min_bytes: 100,
                max_bytes: 1000
            }
        );
        assert_eq!(w.key_distribution, KeyDistribution::RoundRobin);
        assert_eq!(w.compression, Codec::Zstd);
        assert_eq!(w.acks, Acks::Leader);
        assert_eq!(w.warmup, Duration::from_millis(500));
        assert_eq!(w.duration, Duration::from_secs(30));
        assert_eq!(w.batch_size, Workload::default().batch_size);
    }

    #[test]
    fn unknown_field_is_an_error() {
        assert!(Workload::from_toml("partitons = 3").is_err());
    }

    #[test]
    fn flags_override_file() {
        let mut w = Workload::from_toml("partitions = 3\nacks = \"all\"\nrate = 10").unwrap();
        let o = Overrides {
            partitions: Some(8),
            acks: Some(Acks::None),
            duration: Some(parse_duration("20s").unwrap()),
            ..Default::default()
        };
        o.apply(&mut w);
        assert_eq!(w.partitions, 8);
        assert_eq!(w.acks, Acks::None);
        assert_eq!(w.rate, 10, "fields without a flag keep the file's value");
        assert_eq!(w.duration, Duration::from_secs(20));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn config_echo_round_trips() {
        let w = Workload {
            record_size: RecordSize {
                min_bytes: 10,
                max_bytes: 20,
            },
            ..Default::default()
        };
        let text = toml::to_string(&w).unwrap();
        assert_eq!(Workload::from_toml(&text).unwrap(), w);
    }
}
