//! Deterministic simulation of the transaction coordinator's two-phase commit
//! under crashes at every step (issue "transactions").
//!
//! The decisions are Brook's own code: `TxnMeta`'s transitions (`init`,
//! `add`, `verify`, `end`, `fence`, `complete`, `timed_out`, and when to ask
//! for a fresh producer id, `init_needs_id` / `end_needs_id`), its durable
//! record format (`value` / `decode_value`: a restarted coordinator knows
//! only what it decodes), and each data partition's `ProducerStateTable`
//! (`check_all`, `stored`, `first_unstable`, `aborted`), which decides
//! sequences, fencing, open transactions and what read_committed sees.
//!
//! What is modelled is what drives them, as `shard/txns.rs` and `Partition`
//! do: one coordinator whose every state change is appended to a durable log
//! before it takes effect or is answered; one operation per transactional id
//! at a time (else CONCURRENT_TRANSACTIONS); EndTxn answered once its
//! Prepare record is durable; `complete_txn`'s rounds of markers (one task
//! per id, which follows the state: it is looked at when a round starts,
//! then the round's markers are written one partition per step, a refused
//! one goes to the next round) and then `complete()` persisted once the id
//! is free and still in that state; `tick_txns` aborting timed out
//! transactions with `fence()` (a fresh producer id when the epoch is
//! exhausted) and resuming prepared ones no task completes; the partition
//! leader's check of a transactional batch (`produce_in_txn`: none when the producer has a
//! transaction open there at that epoch, else `verify` under transaction
//! version 1, `add` under version 2; the append is a later step, as across
//! brokers) and the epoch check of batches and markers
//! (`Partition::check_producer_epoch`, `in_transaction`). A crash loses the
//! coordinator's memory and all its work in flight (an append in flight may
//! or may not have become durable); a restart rebuilds the state from the
//! log (last record per id wins, unreadable ones skipped) and resumes the
//! markers of prepared transactions. The coordinator's partition may also
//! change leader epoch, or leave and come back, while the broker runs
//! (`move_txns`): the appends in flight fail, the state is rebuilt from the
//! log and prepared transactions are resumed, while the `complete_txn` tasks
//! already running go on (no second one starts for an id). Data partitions are vectors whose appends are
//! durable (their crashes are replication_sim's business); the producer id
//! allocator is a counter (the quorum's).
//!
//! Two transactional ids are driven by client instances speaking
//! transaction version 1 or 2 (picked per instance): InitProducerId, then
//! transactions of a few batches to random partitions (version 1 adds each
//! partition first), commit or abort; they retry on CONCURRENT_TRANSACTIONS,
//! on an unavailable coordinator and on a lost answer (a version 2 EndTxn
//! retry carries the old epoch), abort on a fencing error and stop when the
//! abort is fenced too. A seeded scheduler picks every step: a client acts,
//! a leader handles a batch, an append of the coordinator completes, a
//! marker is written, the clock advances (timeouts of 50–200), the
//! coordinator crashes, restarts or has its partition move, a client
//! crashes (a new instance takes its id; the old one may go on as a zombie),
//! a version 2 client gives up on a batch in flight and aborts. Answers are
//! lost at random. Some ids start a few epochs short of exhaustion, so that
//! the moves to a fresh producer id run. Not modelled: requests to the
//! coordinator delayed in the network (a late EndTxn of transaction version
//! 1 can end the next transaction: the protocol's flaw, not Brook's), a
//! version 1 client abandoning a batch (likewise), KIP-360 re-inits,
//! `__consumer_offsets`, a coordinator on another broker.
//!
//! Checked after every step:
//! - memory equals the log: with no operation in flight for an id, its state
//!   in memory is `decode_value` of its last record;
//! - epochs never go back for an id in the log (a new producer id starts at
//!   0, and only fresh ones are taken);
//! - a marker of the current prepared state is never refused;
//! - a record is appended at most once; a zombie's batch is never appended
//!   after a newer instance's InitProducerId succeeded, and a zombie never
//!   commits after it;
//! - once a record is below its partition's last stable offset,
//!   read_committed's decision for it (from Brook's `aborted()` list, as a
//!   fetch uses it) is the same for every record of its transaction, in
//!   every partition; it is visible if the coordinator durably decided to
//!   commit the transaction or the client saw its commit succeed, hidden if
//!   the coordinator decided or the client saw an abort;
//! - EndTxn answers what the client must use next (version 1: the same
//!   producer id and epoch; version 2: the epoch bumped, or a fresh producer
//!   id at 0), and one answered as already done belongs to a transaction
//!   whose commit was decided.
//!
//! And at the end, once faults stop and everything settles (coordinator up,
//! clients finished, timeouts fired): no partition has an open transaction,
//! no id is prepared or ongoing, every decision is still the first one.
//!
//! `SIM_SEEDS` (default 2000; a soak: `SIM_SEEDS=1000000`) seeds run;
//! `SIM_SEED=n` replays one with its whole trace; `SIM_STEPS` steps per seed
//! (default 1000). `SIM_EXHAUST=0` starts no id near epoch exhaustion,
//! `SIM_FLAPS=0` keeps the coordinator's partition in place;
//! `SIM_KEEP_GOING=1` runs every seed and lists the failures. A failure
//! names its seed and step.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use brook_engine::coord::txn::{self, EndStep, InitStep, TRANSACTION_VERSION, TxnMeta, TxnState};
use brook_engine::log::batch::{BatchInfo, Marker, NO_SEQUENCE, ProducerBatchInfo};
use brook_engine::log::producer::{ProducerError, ProducerStateTable, SequenceVerdict};
use brook_engine::{EngineError, Offset, TimestampMs, TopicPartition};

mod sim;
use sim::{Rng, env};

const TOPIC: &str = "out";
const IDS: [&str; 2] = ["app-a", "app-b"];
/// A client resends a request unanswered for this long.
const CLIENT_TIMEOUT: i64 = 40;
/// Instances per id while faults last.
const MAX_INSTANCES: usize = 6;
const TRACE_LEN: usize = 60;
/// Steps the world may take to settle once faults stop.
const SETTLE_STEPS: usize = 30_000;

fn then_meta_complete(then: &Then) -> TxnMeta {
    match then {
        Then::Complete { prepared } => prepared.complete(),
        _ => unreachable!(),
    }
}

fn tp(p: usize) -> TopicPartition {
    TopicPartition {
        topic: TOPIC.to_string(),
        partition: p as u32,
    }
}

#[derive(Clone, Debug)]
enum Entry {
    Data {
        base: u64,
        pid: u64,
        txn: usize,
        records: Vec<u64>,
    },
    Marker,
}

/// One data partition: its log and Brook's producer state of it.
struct Part {
    log: Vec<Entry>,
    end: u64,
    table: ProducerStateTable,
    /// Entries before this one are below the last stable offset and decided.
    decided_upto: usize,
}

impl Part {
    /// `Partition::check_producer_epoch`: a batch or marker of an epoch older
    /// than the producer's here is fenced.
    fn check_producer_epoch(&self, pid: u64, epoch: u16) -> Result<(), EngineError> {
        match self.table.get(pid) {
            Some(e) if epoch < e.epoch() => Err(EngineError::InvalidProducerEpoch),
            _ => Ok(()),
        }
    }

    /// `Partition::in_transaction`: the producer has a transaction open here
    /// at that epoch (its batches skip the coordinator's check).
    fn in_transaction(&self, pid: u64, epoch: u16) -> bool {
        self.table.in_transaction(pid) && self.table.get(pid).is_some_and(|e| e.epoch() == epoch)
    }

    /// A client's transactional batch as `Partition::append` takes it:
    /// `Ok(true)` appended, `Ok(false)` a duplicate of one in the log.
    fn append(
        &mut self,
        pid: u64,
        epoch: u16,
        seq: u32,
        txn: usize,
        records: &[u64],
    ) -> Result<bool, EngineError> {
        self.check_producer_epoch(pid, epoch)?;
        let p = ProducerBatchInfo {
            producer_id: pid,
            epoch,
            base_sequence: seq,
        };
        let n = records.len() as u32;
        match self.table.check_all([(&p, n)]) {
            Ok(SequenceVerdict::Append) => {}
            Ok(SequenceVerdict::Duplicate { .. }) => return Ok(false),
            Err(ProducerError::InvalidProducerEpoch { .. }) => {
                return Err(EngineError::InvalidProducerEpoch);
            }
            Err(ProducerError::OutOfOrderSequence { expected, received }) => {
                return Err(EngineError::OutOfOrderSequence { expected, received });
            }
            Err(_) => return Err(EngineError::UnknownProducerId),
        }
        let info = BatchInfo {
            base_offset: Offset(self.end),
            len: 100,
            last_offset_delta: n - 1,
            record_count: n,
            first_timestamp: TimestampMs(0),
            max_timestamp: TimestampMs(0),
            producer: Some(p),
            is_transactional: true,
            is_control: false,
            compression: 0,
            leader_epoch: 0,
        };
        self.table.stored(&info, None);
        self.log.push(Entry::Data {
            base: self.end,
            pid,
            txn,
            records: records.to_vec(),
        });
        self.end += u64::from(n);
        Ok(true)
    }

    /// `Partition::append_marker`.
    fn append_marker(&mut self, pid: u64, epoch: u16, commit: bool) -> Result<(), EngineError> {
        self.check_producer_epoch(pid, epoch)?;
        let info = BatchInfo {
            base_offset: Offset(self.end),
            len: 78,
            last_offset_delta: 0,
            record_count: 1,
            first_timestamp: TimestampMs(0),
            max_timestamp: TimestampMs(0),
            producer: Some(ProducerBatchInfo {
                producer_id: pid,
                epoch,
                base_sequence: NO_SEQUENCE,
            }),
            is_transactional: true,
            is_control: true,
            compression: 0,
            leader_epoch: 0,
        };
        let marker = Marker {
            commit,
            coordinator_epoch: 0,
        };
        self.table.stored(&info, Some(marker));
        self.log.push(Entry::Marker);
        self.end += 1;
        Ok(())
    }

    /// The last stable offset: read_committed reads nothing from here on.
    fn lso(&self) -> u64 {
        self.table.first_unstable().map_or(self.end, |o| o.0)
    }

    /// What read_committed makes of the batch at `base` of `pid`: hidden when
    /// an aborted transaction of the producer spans it (the list a fetch
    /// returns, applied as a consumer applies it).
    fn visible(&self, pid: u64, base: u64) -> bool {
        !(self.table.aborted().iter())
            .any(|a| a.producer_id == pid && a.first_offset.0 <= base && base <= a.last_offset.0)
    }
}

/// What the coordinator does once an append to its log is durable.
#[derive(Clone, Debug)]
enum Then {
    Init {
        client: usize,
        req: u64,
    },
    FenceFirst {
        client: usize,
        req: u64,
    },
    Add {
        client: usize,
        req: u64,
    },
    LeaderAdd {
        job: u64,
    },
    End {
        client: usize,
        req: u64,
        txn: usize,
        commit: bool,
        answer: (u64, u16),
    },
    Timeout,
    /// `complete()` of this prepared state.
    Complete {
        prepared: TxnMeta,
    },
}

struct Persist {
    id: usize,
    meta: TxnMeta,
    then: Then,
}

/// `complete_txn`: the markers of one prepared transaction, then `complete()`.
struct MarkerTask {
    id: usize,
    meta: TxnMeta,
    /// The markers of the round in flight, and those refused in it.
    round: Vec<usize>,
    retry: Vec<usize>,
    stage: TaskStage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskStage {
    /// About to check the state and send the round.
    Round,
    Writing,
    /// All written: `complete()` is persisted once the id is free.
    Completing,
    /// `complete()` is being appended.
    Recording,
}

struct Coord {
    up: bool,
    /// `__transaction_state`: (id, `value()`), durable.
    log: Vec<(usize, Vec<u8>)>,
    mem: BTreeMap<usize, TxnMeta>,
    busy: BTreeSet<usize>,
    persists: Vec<Persist>,
    tasks: Vec<MarkerTask>,
}

#[derive(Clone, Debug)]
enum Req {
    Init,
    Add(usize),
    Produce {
        part: usize,
        seq: u32,
        records: Vec<u64>,
    },
    End(bool),
}

#[derive(Clone, Debug)]
enum Answer {
    Ids(Result<(u64, u16), EngineError>),
    Unit(Result<(), EngineError>),
}

struct Out {
    req: u64,
    kind: Req,
    sent: i64,
    answer: Option<Answer>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Init,
    Idle,
    InTxn,
    Ending(bool),
    Done,
}

struct Client {
    id: usize,
    version: i16,
    timeout_ms: i32,
    zombie: bool,
    /// (producer id, epoch) once initialised.
    ids: Option<(u64, u16)>,
    seqs: BTreeMap<usize, u32>,
    phase: Phase,
    txns_left: usize,
    txn: Option<usize>,
    /// Transaction version 1: partitions added to the open transaction.
    added: BTreeSet<usize>,
    /// Transaction version 2: a batch of the open transaction was sent.
    produced: bool,
    produces_left: usize,
    next_part: Option<usize>,
    out: Option<Out>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Open,
    Committed,
    Aborted,
    /// The client never learnt (fenced, crashed, gave up).
    Unknown,
}

struct TxnInfo {
    client: usize,
    no: usize,
    outcome: Outcome,
    /// A PrepareCommit / PrepareAbort of this client's EndTxn is durable.
    decided_commit: bool,
    decided_abort: bool,
    /// read_committed's decision, once one of its records is below the LSO.
    seen: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Arrived,
    /// The coordinator's `add` is being persisted.
    Waiting,
    Checked,
}

/// A transactional batch at its partition's leader.
struct Job {
    no: u64,
    client: usize,
    req: u64,
    part: usize,
    pid: u64,
    epoch: u16,
    seq: u32,
    txn: usize,
    records: Vec<u64>,
    stage: Stage,
}

#[derive(Default, Clone, Copy)]
struct Stats {
    committed: usize,
    aborted: usize,
    fenced: usize,
    timeouts: usize,
    coord_crashes: usize,
    flaps: usize,
    client_crashes: usize,
    /// Prepared transactions a (re)started coordinator resumed.
    resumed: usize,
    /// EndTxn retries answered as done.
    end_retries: usize,
    fresh_ids: usize,
    markers: usize,
    zombie_refused: usize,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.committed += o.committed;
        self.aborted += o.aborted;
        self.fenced += o.fenced;
        self.timeouts += o.timeouts;
        self.coord_crashes += o.coord_crashes;
        self.flaps += o.flaps;
        self.client_crashes += o.client_crashes;
        self.resumed += o.resumed;
        self.end_retries += o.end_retries;
        self.fresh_ids += o.fresh_ids;
        self.markers += o.markers;
        self.zombie_refused += o.zombie_refused;
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} transactions committed, {} aborted; {} instances fenced, {} timeouts; {} coordinator crashes, {} leadership changes, {} prepared transactions resumed, {} EndTxn retries answered; {} client crashes, {} zombie requests refused; {} markers; {} fresh producer ids",
            self.committed,
            self.aborted,
            self.fenced,
            self.timeouts,
            self.coord_crashes,
            self.flaps,
            self.resumed,
            self.end_retries,
            self.client_crashes,
            self.zombie_refused,
            self.markers,
            self.fresh_ids
        )
    }
}

struct World {
    rng: Rng,
    seed: u64,
    step: usize,
    now: i64,
    coord: Coord,
    parts: Vec<Part>,
    clients: Vec<Client>,
    /// Per id: its newest instance, and how many it had.
    current: Vec<usize>,
    instances: Vec<usize>,
    /// Per id: the instance whose InitProducerId succeeded (durably) last,
    /// and that InitProducerId's number.
    ready: Vec<Option<(usize, u64)>>,
    /// Per instance: the number of its last successful InitProducerId.
    ready_no: BTreeMap<usize, u64>,
    inits: u64,
    txns: Vec<TxnInfo>,
    jobs: Vec<Job>,
    /// record → (partition, transaction) where it was appended.
    appended: BTreeMap<u64, (usize, usize)>,
    /// record → read_committed's decision, once below the LSO.
    decided: BTreeMap<u64, bool>,
    /// Per id: the (producer id, epoch) of its last durable record.
    last_durable: Vec<Option<(u64, u16)>>,
    /// Producer ids the coordinator has put in its log, and for which id.
    pids: BTreeMap<u64, usize>,
    next_pid: u64,
    next_req: u64,
    next_record: u64,
    faults: bool,
    /// Whether the coordinator's partition may change leader epoch.
    flaps: bool,
    producing: bool,
    trace: VecDeque<String>,
    trace_cap: usize,
    stats: Stats,
}

impl World {
    fn new(seed: u64, trace_cap: usize, exhaust: bool) -> World {
        let mut rng = Rng(seed);
        let nparts = 3 + rng.below(2) as usize;
        let mut w = World {
            rng,
            seed,
            step: 0,
            now: 0,
            coord: Coord {
                up: true,
                log: Vec::new(),
                mem: BTreeMap::new(),
                busy: BTreeSet::new(),
                persists: Vec::new(),
                tasks: Vec::new(),
            },
            parts: (0..nparts)
                .map(|_| Part {
                    log: Vec::new(),
                    end: 0,
                    table: ProducerStateTable::new(),
                    decided_upto: 0,
                })
                .collect(),
            clients: Vec::new(),
            current: Vec::new(),
            instances: vec![0; IDS.len()],
            ready: vec![None; IDS.len()],
            ready_no: BTreeMap::new(),
            inits: 0,
            txns: Vec::new(),
            jobs: Vec::new(),
            appended: BTreeMap::new(),
            decided: BTreeMap::new(),
            last_durable: vec![None; IDS.len()],
            pids: BTreeMap::new(),
            next_pid: 1000,
            next_req: 1,
            next_record: 1,
            faults: true,
            flaps: env("SIM_FLAPS", 1) != 0,
            producing: true,
            trace: VecDeque::new(),
            trace_cap,
            stats: Stats::default(),
        };
        for (id, name) in IDS.iter().enumerate() {
            // Some ids start a few epochs short of exhaustion, so that the
            // move to a fresh producer id (init, or EndTxn under version 2) runs.
            if w.rng.chance(35) && exhaust {
                let pid = w.alloc_pid();
                let mut m = TxnMeta::new(name.to_string(), pid, 60_000, 0);
                m.epoch = txn::EPOCH_EXHAUSTED - 1 - w.rng.below(4) as u16;
                w.log(format!("{name} starts at pid {pid} epoch {}", m.epoch));
                w.durable(id, &m);
                w.coord.mem.insert(id, m);
            }
            w.current.push(usize::MAX);
            w.spawn(id);
        }
        w
    }

    fn fail(&self, what: String) -> ! {
        panic!("seed {} step {}: {what}", self.seed, self.step)
    }

    fn log(&mut self, what: String) {
        if self.trace.len() >= self.trace_cap {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("#{} t={} {what}", self.step, self.now));
    }

    fn alloc_pid(&mut self) -> u64 {
        self.next_pid += 1;
        self.next_pid
    }

    fn name(&self, c: usize) -> String {
        let cl = &self.clients[c];
        let z = if cl.zombie { " zombie" } else { "" };
        format!("{}/c{c}v{}{z}", IDS[cl.id], cl.version)
    }

    /// A new client instance for `id`.
    fn spawn(&mut self, id: usize) {
        let version = 1 + self.rng.below(2) as i16;
        let c = Client {
            id,
            version,
            timeout_ms: 50 + self.rng.below(151) as i32,
            zombie: false,
            ids: None,
            seqs: BTreeMap::new(),
            phase: Phase::Init,
            txns_left: 2 + self.rng.below(5) as usize,
            txn: None,
            added: BTreeSet::new(),
            produced: false,
            produces_left: 0,
            next_part: None,
            out: None,
        };
        self.clients.push(c);
        let idx = self.clients.len() - 1;
        self.current[id] = idx;
        self.instances[id] += 1;
        let who = self.name(idx);
        self.log(format!("{who} starts"));
    }

    // ---- the coordinator's log ----

    /// Appends `m` to the coordinator's log (it is durable from here on).
    fn durable(&mut self, id: usize, m: &TxnMeta) {
        let now = (m.producer_id, m.epoch);
        match self.last_durable[id] {
            Some((pid, epoch)) if pid == now.0 => {
                if now.1 < epoch {
                    self.fail(format!(
                        "{}: epoch goes back from {epoch} to {} (pid {pid}): {m:?}",
                        IDS[id], now.1
                    ));
                }
            }
            _ => {
                if let Some(&owner) = self.pids.get(&now.0) {
                    self.fail(format!(
                        "{} moves to pid {}, already {}'s: {m:?}",
                        IDS[id], now.0, IDS[owner]
                    ));
                }
                if now.1 != 0 && self.last_durable[id].is_some() {
                    self.fail(format!(
                        "{} moves to a new pid at epoch {}: {m:?}",
                        IDS[id], now.1
                    ));
                }
                self.pids.insert(now.0, id);
            }
        }
        if m.next_producer_id >= 0
            && let Some(&owner) = self.pids.get(&(m.next_producer_id as u64))
        {
            self.fail(format!(
                "{} prepares a move to pid {}, already {}'s: {m:?}",
                IDS[id], m.next_producer_id, IDS[owner]
            ));
        }
        self.last_durable[id] = Some(now);
        self.coord.log.push((id, txn::value(m)));
    }

    /// `persist_txn`: the append starts; memory changes and the answer goes
    /// out only once it is durable (`persist_step`).
    fn persist(&mut self, id: usize, mut meta: TxnMeta, then: Then) {
        meta.last_update_ms = self.now;
        self.coord.busy.insert(id);
        self.coord.persists.push(Persist { id, meta, then });
    }

    fn persist_step(&mut self) {
        if self.coord.persists.is_empty() {
            return;
        }
        let k = self.rng.below(self.coord.persists.len() as u64) as usize;
        let p = self.coord.persists.swap_remove(k);
        let Persist { id, meta, then } = p;
        let why = match &then {
            Then::Complete { .. } => "Complete".to_string(),
            t => format!("{t:?}"),
        };
        self.log(format!(
            "{} persisted {:?} pid {} epoch {} {:?} next {} for {why}",
            IDS[id],
            meta.state,
            meta.producer_id,
            meta.epoch,
            meta.partitions
                .iter()
                .map(|t| t.partition)
                .collect::<Vec<_>>(),
            meta.next_producer_id
        ));
        self.durable(id, &meta);
        self.coord.mem.insert(id, meta.clone());
        self.coord.busy.remove(&id);
        match then {
            Then::Init { client, req } => {
                self.inits += 1;
                self.ready[id] = Some((client, self.inits));
                self.ready_no.insert(client, self.inits);
                let ans = Answer::Ids(Ok((meta.producer_id, meta.epoch)));
                self.answer(client, req, ans);
            }
            Then::FenceFirst { client, req } => {
                self.start_markers(id, meta);
                let ans = Answer::Ids(Err(EngineError::ConcurrentTransactions));
                self.answer(client, req, ans);
            }
            Then::Add { client, req } => self.answer(client, req, Answer::Unit(Ok(()))),
            Then::LeaderAdd { job } => {
                if let Some(j) = self.jobs.iter_mut().find(|j| j.no == job) {
                    j.stage = Stage::Checked;
                }
            }
            Then::End {
                client,
                req,
                txn,
                commit,
                answer,
            } => {
                self.decide_end(txn, commit);
                if commit && let Some(r) = self.superseded(id, client) {
                    self.fail(format!(
                        "zombie {} commits after c{r}'s InitProducerId succeeded",
                        self.name(client)
                    ));
                }
                self.start_markers(id, meta);
                self.answer(client, req, Answer::Ids(Ok(answer)));
            }
            Then::Timeout => self.start_markers(id, meta),
            Then::Complete { .. } => self.task_recorded(id, true),
        }
    }

    /// The instance whose InitProducerId succeeded after `client`'s did.
    fn superseded(&self, id: usize, client: usize) -> Option<usize> {
        let mine = self.ready_no.get(&client).copied().unwrap_or(0);
        self.ready[id].filter(|&(_, no)| no > mine).map(|(r, _)| r)
    }

    fn decide_end(&mut self, txn: usize, commit: bool) {
        let t = &mut self.txns[txn];
        if commit {
            t.decided_commit = true;
        } else {
            t.decided_abort = true;
        }
        self.check_agreement(txn);
    }

    /// `prepare_end`'s spawned `complete_txn`: one task per id (a second
    /// one returns at once; the running one follows the state).
    fn start_markers(&mut self, id: usize, meta: TxnMeta) {
        debug_assert!(meta.state.is_prepared());
        if self.coord.tasks.iter().any(|t| t.id == id) {
            return;
        }
        let round = meta
            .partitions
            .iter()
            .map(|t| t.partition as usize)
            .collect();
        self.coord.tasks.push(MarkerTask {
            id,
            meta,
            round,
            retry: Vec::new(),
            stage: TaskStage::Round,
        });
    }

    fn marker_step(&mut self) {
        if !self.coord.up || self.coord.tasks.is_empty() {
            return;
        }
        let k = self.rng.below(self.coord.tasks.len() as u64) as usize;
        let t = &mut self.coord.tasks[k];
        let id = t.id;
        match t.stage {
            TaskStage::Round => {
                // Each round starts by looking whether the state is still
                // the prepared one (a new prepared state starts over, any
                // other ends the task); its markers are then all sent at once.
                match self.coord.mem.get(&id) {
                    Some(m) if *m == t.meta => {}
                    Some(m) if m.state.is_prepared() => {
                        t.meta = m.clone();
                        t.round = (m.partitions.iter())
                            .map(|tp| tp.partition as usize)
                            .collect();
                        t.retry.clear();
                        return;
                    }
                    _ => {
                        self.coord.tasks.swap_remove(k);
                        return;
                    }
                }
                t.stage = if t.round.is_empty() {
                    TaskStage::Completing
                } else {
                    TaskStage::Writing
                };
            }
            TaskStage::Writing => {
                let i = self.rng.below(t.round.len() as u64) as usize;
                let p = t.round.swap_remove(i);
                let (pid, epoch) = (t.meta.producer_id, t.meta.epoch);
                let commit = t.meta.state == TxnState::PrepareCommit;
                let r = self.parts[p].append_marker(pid, epoch, commit);
                let t = &mut self.coord.tasks[k];
                if let Err(e) = &r {
                    // complete_txn retries a refused marker in its next
                    // round, which first looks at the state: a task whose
                    // transaction is over stops there. For the state that
                    // is current a refusal would be retried forever: the
                    // partition knows a newer epoch of this producer than
                    // the prepared one. Partitions learn epochs only from
                    // batches the coordinator let through (at most its epoch
                    // then) and from its markers, and a prepared state stays
                    // until its markers are all written: a fenced producer's
                    // batches are refused, never its coordinator's markers.
                    t.retry.push(p);
                    if self.coord.mem.get(&id) == Some(&t.meta) {
                        let current = self.parts[p].table.get(pid).map(|e| e.epoch());
                        self.fail(format!(
                            "p{p} refuses {}'s marker (pid {pid} epoch {epoch}, its epoch there {current:?}): {e}",
                            IDS[id]
                        ));
                    }
                    self.log(format!(
                        "p{p} refuses a stale marker of pid {pid} epoch {epoch}"
                    ));
                } else {
                    self.stats.markers += 1;
                    let what = if commit { "commit" } else { "abort" };
                    self.log(format!("marker {what} pid {pid} epoch {epoch} -> p{p}"));
                }
                let t = &mut self.coord.tasks[k];
                if t.round.is_empty() {
                    t.round = std::mem::take(&mut t.retry);
                    t.stage = if t.round.is_empty() {
                        TaskStage::Completing
                    } else {
                        TaskStage::Round
                    };
                }
                if r.is_ok() {
                    self.decide(p);
                }
            }
            TaskStage::Completing => {
                // Record the end once no operation holds the id, if the
                // state is still the one whose markers were written.
                if self.coord.mem.get(&id) != Some(&t.meta) {
                    t.stage = TaskStage::Round;
                } else if !self.coord.busy.contains(&id) {
                    t.stage = TaskStage::Recording;
                    let then = Then::Complete {
                        prepared: t.meta.clone(),
                    };
                    self.persist(id, then_meta_complete(&then), then);
                }
            }
            // Waits for its append (`persist_step` / `fail_appends`).
            TaskStage::Recording => {}
        }
    }

    /// The append of `complete()` by `id`'s task ended: the task looks at
    /// the state again (and ends, the id no longer prepared), or retries.
    fn task_recorded(&mut self, id: usize, ok: bool) {
        if let Some(t) =
            (self.coord.tasks.iter_mut()).find(|t| t.id == id && t.stage == TaskStage::Recording)
        {
            t.stage = if ok {
                TaskStage::Round
            } else {
                TaskStage::Completing
            };
        }
    }

    fn crash_coordinator(&mut self) {
        self.stats.coord_crashes += 1;
        self.coord.up = false;
        self.coord.mem.clear();
        self.coord.tasks.clear();
        self.fail_appends(true);
    }

    /// The coordinator's partition changes leader epoch and stays here (or
    /// leaves and comes back): `move_txns` rebuilds the state from the log
    /// and resumes prepared transactions, while the appends in flight fail
    /// and the `complete_txn` tasks already running go on.
    fn flap_coordinator(&mut self) {
        self.stats.flaps += 1;
        self.fail_appends(false);
        self.restart_coordinator();
    }

    /// The appends in flight fail: each may have reached the log or not.
    fn fail_appends(&mut self, crash: bool) {
        self.coord.busy.clear();
        let persists = std::mem::take(&mut self.coord.persists);
        let mut kept = Vec::new();
        for p in persists {
            if self.rng.chance(30) {
                self.durable(p.id, &p.meta);
                kept.push(format!("{:?}", p.meta.state));
                if let Then::End { txn, commit, .. } = p.then {
                    self.decide_end(txn, commit);
                }
            }
            let e = EngineError::CoordinatorNotAvailable;
            match p.then {
                Then::LeaderAdd { job } => {
                    if let Some(k) = self.jobs.iter().position(|j| j.no == job) {
                        let j = self.jobs.swap_remove(k);
                        let e = EngineError::TxnCoordinatorUnavailable(e.to_string());
                        self.answer(j.client, j.req, Answer::Unit(Err(e)));
                    }
                }
                // A crashed coordinator answers nothing.
                _ if crash => {}
                Then::Init { client, req }
                | Then::FenceFirst { client, req }
                | Then::End { client, req, .. } => self.answer(client, req, Answer::Ids(Err(e))),
                Then::Add { client, req } => self.answer(client, req, Answer::Unit(Err(e))),
                Then::Timeout => {}
                // complete_txn retries recording the end (a crash ended it).
                Then::Complete { .. } => self.task_recorded(p.id, false),
            }
        }
        let what = if crash {
            "crashed"
        } else {
            "lost and took its partition again"
        };
        self.log(format!(
            "coordinator {what}; in-flight appends made durable: {kept:?}"
        ));
    }

    /// `move_txns` / `replay_txns`: the state from the log, prepared
    /// transactions resumed.
    fn restart_coordinator(&mut self) {
        self.coord.up = true;
        let mut mem = BTreeMap::new();
        for (id, v) in &self.coord.log {
            // An unreadable record is skipped, as `apply_batch` does (the
            // memory-equals-log check reports it).
            if let Some(m) = txn::decode_value(IDS[*id].to_string(), v) {
                mem.insert(*id, m);
            }
        }
        for m in mem.values() {
            if m.state.is_prepared() {
                self.stats.resumed += 1;
                self.start_markers(
                    IDS.iter().position(|n| *n == m.transactional_id).unwrap(),
                    m.clone(),
                );
            }
        }
        self.coord.mem = mem;
        self.log("coordinator rebuilt its state from the log".to_string());
    }

    /// `tick_txns`.
    fn clock_step(&mut self) {
        self.now += 1 + self.rng.below(8) as i64;
        if !self.coord.up {
            return;
        }
        let due: Vec<usize> = (self.coord.mem.iter())
            .filter(|(id, m)| m.timed_out(self.now) && !self.coord.busy.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let old = self.coord.mem[&id].clone();
            let fresh = old.fence_needs_id().then(|| self.alloc_pid());
            let (epoch, m) = (old.epoch, old.fence(fresh).expect("a fresh id was given"));
            self.stats.timeouts += 1;
            self.log(format!("{} times out at epoch {epoch}", IDS[id]));
            self.persist(id, m, Then::Timeout);
        }
        // A prepared transaction no task completes is resumed.
        let stalled: Vec<(usize, TxnMeta)> = (self.coord.mem.iter())
            .filter(|(id, m)| {
                m.state.is_prepared() && !self.coord.tasks.iter().any(|t| t.id == **id)
            })
            .map(|(id, m)| (*id, m.clone()))
            .collect();
        for (id, m) in stalled {
            self.start_markers(id, m);
        }
    }

    // ---- requests ----

    fn answer(&mut self, client: usize, req: u64, ans: Answer) {
        if self.faults && self.rng.chance(5) {
            self.log(format!("answer {ans:?} to {} lost", self.name(client)));
            return;
        }
        if let Some(out) = &mut self.clients[client].out
            && out.req == req
        {
            out.answer = Some(ans);
        }
    }

    fn send(&mut self, c: usize, kind: Req) {
        let req = self.next_req;
        self.next_req += 1;
        self.clients[c].out = Some(Out {
            req,
            kind: kind.clone(),
            sent: self.now,
            answer: None,
        });
        let who = self.name(c);
        let (pid, epoch) = self.clients[c].ids.unwrap_or((u64::MAX, u16::MAX));
        self.log(format!("{who} sends {kind:?} as pid {pid} epoch {epoch}"));
        if let Req::Produce { part, seq, records } = kind {
            let txn = self.clients[c].txn.expect("a transaction is open");
            self.jobs.push(Job {
                no: req,
                client: c,
                req,
                part,
                pid,
                epoch,
                seq,
                txn,
                records,
                stage: Stage::Arrived,
            });
            return;
        }
        if let Some(ans) = self.coordinator(c, req, &kind) {
            self.answer(c, req, ans);
        }
    }

    /// The coordinator's side of InitProducerId, AddPartitionsToTxn and
    /// EndTxn (`init_txn_producer`, `add_to_txn`, `end_txn`); `None` when
    /// the answer waits for an append.
    fn coordinator(&mut self, c: usize, req: u64, kind: &Req) -> Option<Answer> {
        let cl = &self.clients[c];
        let (id, version, timeout_ms) = (cl.id, cl.version, cl.timeout_ms);
        let (pid, epoch) = cl.ids.map_or((-1, -1), |(p, e)| (p as i64, e as i16));
        let err_ids = |e| Some(Answer::Ids(Err(e)));
        if !self.coord.up {
            return match kind {
                Req::Add(_) => Some(Answer::Unit(Err(EngineError::CoordinatorNotAvailable))),
                _ => err_ids(EngineError::CoordinatorNotAvailable),
            };
        }
        if self.coord.busy.contains(&id) {
            return match kind {
                Req::Add(_) => Some(Answer::Unit(Err(EngineError::ConcurrentTransactions))),
                _ => err_ids(EngineError::ConcurrentTransactions),
            };
        }
        let m = self.coord.mem.get(&id).cloned();
        match kind {
            Req::Init => {
                let Some(m) = m else {
                    let pid = self.alloc_pid();
                    let m = TxnMeta::new(IDS[id].to_string(), pid, timeout_ms, self.now);
                    self.persist(id, m, Then::Init { client: c, req });
                    return None;
                };
                let fresh = m.init_needs_id().then(|| self.alloc_pid());
                match m.init((-1, -1), timeout_ms, fresh) {
                    Ok(InitStep::FenceFirst(f)) => {
                        self.persist(id, f, Then::FenceFirst { client: c, req });
                        None
                    }
                    Ok(InitStep::Ready(r)) => {
                        if r.producer_id != m.producer_id {
                            self.stats.fresh_ids += 1;
                        }
                        self.persist(id, r, Then::Init { client: c, req });
                        None
                    }
                    Err(e) => err_ids(e),
                }
            }
            Req::Add(p) => {
                let Some(m) = m else {
                    let e = EngineError::InvalidProducerIdMapping { given: pid };
                    return Some(Answer::Unit(Err(e)));
                };
                match m.add(pid, epoch, &[tp(*p)], 1, self.now) {
                    Ok(None) => Some(Answer::Unit(Ok(()))),
                    Ok(Some(n)) => {
                        self.persist(id, n, Then::Add { client: c, req });
                        None
                    }
                    Err(e) => Some(Answer::Unit(Err(e))),
                }
            }
            Req::End(commit) => {
                let Some(m) = m else {
                    return err_ids(EngineError::InvalidProducerIdMapping { given: pid });
                };
                let cv = version;
                let fresh = m.end_needs_id(cv).then(|| self.alloc_pid());
                let txn = self.clients[c].txn.expect("a transaction is open");
                match m.end(pid, epoch, *commit, cv, fresh) {
                    Ok(EndStep::Done { producer_id, epoch }) => {
                        self.stats.end_retries += 1;
                        if *commit && !self.txns[txn].decided_commit {
                            self.fail(format!(
                                "EndTxn(commit) of {} txn {} answered as done, but its commit was never decided",
                                self.name(c),
                                self.txns[txn].no
                            ));
                        }
                        Some(Answer::Ids(Ok((producer_id, epoch))))
                    }
                    Ok(EndStep::Prepare(prepared)) => {
                        let next = prepared.complete();
                        if prepared.next_producer_id >= 0 {
                            self.stats.fresh_ids += 1;
                        }
                        let answer = (next.producer_id, next.epoch);
                        let then = Then::End {
                            client: c,
                            req,
                            txn,
                            commit: *commit,
                            answer,
                        };
                        self.persist(id, prepared, then);
                        None
                    }
                    Err(e) => err_ids(e),
                }
            }
            Req::Produce { .. } => unreachable!("batches go to leaders"),
        }
    }

    // ---- partition leaders ----

    /// `produce_in_txn` / `check_txn_partition`, then the append.
    fn leader_step(&mut self) {
        let ready: Vec<usize> = (0..self.jobs.len())
            .filter(|&k| self.jobs[k].stage != Stage::Waiting)
            .collect();
        if ready.is_empty() {
            return;
        }
        let k = ready[self.rng.below(ready.len() as u64) as usize];
        let j = &self.jobs[k];
        let (part, pid, epoch, no) = (j.part, j.pid, j.epoch, j.no);
        if j.stage == Stage::Checked || self.parts[part].in_transaction(pid, epoch) {
            return self.append_job(k);
        }
        let client = j.client;
        let id = self.clients[client].id;
        let check = if !self.coord.up {
            Err(EngineError::CoordinatorNotAvailable)
        } else if self.clients[client].version == 1 {
            // verify_in_txn
            match self.coord.mem.get(&id) {
                None => Err(EngineError::InvalidProducerIdMapping { given: pid as i64 }),
                Some(m) => m.verify(pid as i64, epoch as i16, &tp(part)),
            }
        } else if self.coord.busy.contains(&id) {
            Err(EngineError::ConcurrentTransactions)
        } else {
            // add_to_txn at the broker's transaction version
            match self.coord.mem.get(&id).cloned() {
                None => Err(EngineError::InvalidProducerIdMapping { given: pid as i64 }),
                Some(m) => {
                    match m.add(
                        pid as i64,
                        epoch as i16,
                        &[tp(part)],
                        TRANSACTION_VERSION,
                        self.now,
                    ) {
                        Ok(None) => Ok(()),
                        Ok(Some(n)) => {
                            self.jobs[k].stage = Stage::Waiting;
                            self.persist(id, n, Then::LeaderAdd { job: no });
                            return;
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        };
        match check {
            Ok(()) => self.jobs[k].stage = Stage::Checked,
            Err(e) => {
                // check_txn_partition's mapping to what a Produce answer carries.
                let e = match e {
                    EngineError::ProducerFenced { .. } | EngineError::InvalidProducerEpoch => {
                        EngineError::InvalidProducerEpoch
                    }
                    e @ (EngineError::InvalidProducerIdMapping { .. }
                    | EngineError::InvalidTxnState(_)) => {
                        EngineError::InvalidTxnState(e.to_string())
                    }
                    e => EngineError::TxnCoordinatorUnavailable(e.to_string()),
                };
                let j = self.jobs.swap_remove(k);
                self.log(format!(
                    "p{} refuses {}'s batch seq {}: {e}",
                    j.part,
                    self.name(j.client),
                    j.seq
                ));
                self.answer(j.client, j.req, Answer::Unit(Err(e)));
            }
        }
    }

    fn append_job(&mut self, k: usize) {
        let j = self.jobs.swap_remove(k);
        let r = self.parts[j.part].append(j.pid, j.epoch, j.seq, j.txn, &j.records);
        let who = self.name(j.client);
        match &r {
            Ok(true) => {
                self.log(format!(
                    "p{} appends {who}'s batch pid {} epoch {} seq {} {:?}",
                    j.part, j.pid, j.epoch, j.seq, j.records
                ));
                let id = self.clients[j.client].id;
                if let Some(r) = self.superseded(id, j.client) {
                    self.fail(format!(
                        "zombie {who}'s batch {:?} appended to p{} after c{r}'s InitProducerId succeeded",
                        j.records, j.part
                    ));
                }
                for &rec in &j.records {
                    if let Some(was) = self.appended.insert(rec, (j.part, j.txn)) {
                        self.fail(format!("record {rec} appended twice (first to p{})", was.0));
                    }
                }
                self.decide(j.part);
            }
            Ok(false) => self.log(format!(
                "p{} takes {who}'s batch seq {} as a duplicate",
                j.part, j.seq
            )),
            Err(e) => {
                self.log(format!(
                    "p{} refuses {who}'s batch seq {}: {e}",
                    j.part, j.seq
                ));
            }
        }
        self.answer(j.client, j.req, Answer::Unit(r.map(|_| ())));
    }

    // ---- read_committed ----

    /// Decides what is newly below partition `p`'s last stable offset and
    /// checks it against what the rest of its transaction got.
    fn decide(&mut self, p: usize) {
        let lso = self.parts[p].lso();
        let mut newly = Vec::new();
        let part = &mut self.parts[p];
        while part.decided_upto < part.log.len() {
            match &part.log[part.decided_upto] {
                Entry::Data {
                    base,
                    pid,
                    txn,
                    records,
                } => {
                    if *base >= lso {
                        break;
                    }
                    newly.push((*txn, records.clone(), part.visible(*pid, *base)));
                }
                Entry::Marker => {}
            }
            part.decided_upto += 1;
        }
        for (txn, records, visible) in newly {
            for r in records {
                self.decided.insert(r, visible);
            }
            match self.txns[txn].seen {
                None => self.txns[txn].seen = Some(visible),
                Some(v) if v == visible => {}
                Some(v) => {
                    let t = &self.txns[txn];
                    let what = format!(
                        "{} txn {}: a record is {} in p{p}, others are {}",
                        self.name(t.client),
                        t.no,
                        if visible { "visible" } else { "hidden" },
                        if v { "visible" } else { "hidden" }
                    );
                    self.fail(what);
                }
            }
            self.check_agreement(txn);
        }
    }

    /// What read_committed decided agrees with the coordinator's decision
    /// and with what the client was told.
    fn check_agreement(&self, txn: usize) {
        let t = &self.txns[txn];
        let Some(visible) = t.seen else { return };
        let must = if t.decided_commit || t.outcome == Outcome::Committed {
            Some(true)
        } else if t.decided_abort || t.outcome == Outcome::Aborted {
            Some(false)
        } else {
            None
        };
        if t.decided_commit && t.decided_abort {
            self.fail(format!(
                "{} txn {} decided both ways",
                self.name(t.client),
                t.no
            ));
        }
        if must.is_some_and(|m| m != visible) {
            self.fail(format!(
                "{} txn {} ({:?}, decided commit {} abort {}) is {} to read_committed",
                self.name(t.client),
                t.no,
                t.outcome,
                t.decided_commit,
                t.decided_abort,
                if visible { "visible" } else { "hidden" }
            ));
        }
    }

    // ---- clients ----

    fn client_step(&mut self) {
        let id = self.rng.below(IDS.len() as u64) as usize;
        let cur = self.current[id];
        if self.clients[cur].phase == Phase::Done
            && self.producing
            && self.instances[id] < MAX_INSTANCES
            && self.rng.chance(20)
        {
            self.spawn(id);
            return;
        }
        let live: Vec<usize> = (0..self.clients.len())
            .filter(|&c| self.clients[c].id == id && self.clients[c].phase != Phase::Done)
            .collect();
        if live.is_empty() {
            return;
        }
        let c = live[self.rng.below(live.len() as u64) as usize];
        self.act(c);
    }

    fn act(&mut self, c: usize) {
        if let Some(out) = &mut self.clients[c].out {
            if let Some(ans) = out.answer.take() {
                let kind = out.kind.clone();
                self.clients[c].out = None;
                return self.on_answer(c, kind, ans);
            }
            if self.now - out.sent > CLIENT_TIMEOUT {
                let kind = out.kind.clone();
                self.send(c, kind);
            }
            return;
        }
        let cl = &self.clients[c];
        match cl.phase {
            Phase::Init => self.send(c, Req::Init),
            Phase::Idle => {
                if cl.txns_left == 0 {
                    self.clients[c].phase = Phase::Done;
                    let who = self.name(c);
                    self.log(format!("{who} is done"));
                    return;
                }
                let no = self.txns.iter().filter(|t| t.client == c).count();
                self.txns.push(TxnInfo {
                    client: c,
                    no,
                    outcome: Outcome::Open,
                    decided_commit: false,
                    decided_abort: false,
                    seen: None,
                });
                let n = 1 + self.rng.below(4) as usize;
                let cl = &mut self.clients[c];
                cl.txn = Some(self.txns.len() - 1);
                cl.added.clear();
                cl.produced = false;
                cl.produces_left = n;
                cl.next_part = None;
                cl.phase = Phase::InTxn;
            }
            Phase::InTxn => {
                if self.rng.chance(4) {
                    self.clients[c].phase = Phase::Ending(false);
                    return;
                }
                if cl.produces_left == 0 {
                    let commit = self.rng.chance(80);
                    self.clients[c].phase = Phase::Ending(commit);
                    return;
                }
                let nparts = self.parts.len() as u64;
                let p = match cl.next_part {
                    Some(p) => p,
                    None => self.rng.below(nparts) as usize,
                };
                let cl = &mut self.clients[c];
                cl.next_part = Some(p);
                if cl.version == 1 && !cl.added.contains(&p) {
                    return self.send(c, Req::Add(p));
                }
                cl.produced = true;
                let seq = cl.seqs.get(&p).copied().unwrap_or(0);
                let n = 1 + self.rng.below(3);
                let records = (0..n).map(|i| self.next_record + i).collect();
                self.next_record += n;
                self.send(
                    c,
                    Req::Produce {
                        part: p,
                        seq,
                        records,
                    },
                );
            }
            Phase::Ending(commit) => {
                let nothing_sent = if cl.version == 1 {
                    cl.added.is_empty()
                } else {
                    !cl.produced
                };
                if nothing_sent {
                    // Nothing reached the coordinator: the client ends it alone.
                    self.finish_txn(
                        c,
                        if commit {
                            Outcome::Committed
                        } else {
                            Outcome::Aborted
                        },
                    );
                } else {
                    self.send(c, Req::End(commit));
                }
            }
            Phase::Done => {}
        }
    }

    fn finish_txn(&mut self, c: usize, outcome: Outcome) {
        let cl = &mut self.clients[c];
        let t = cl.txn.take().expect("a transaction is open");
        cl.txns_left = cl.txns_left.saturating_sub(1);
        if cl.phase != Phase::Done {
            cl.phase = Phase::Idle;
        }
        self.txns[t].outcome = outcome;
        match outcome {
            Outcome::Committed => self.stats.committed += 1,
            Outcome::Aborted => self.stats.aborted += 1,
            _ => {}
        }
        let who = self.name(c);
        self.log(format!("{who} txn {} ends {outcome:?}", self.txns[t].no));
        self.check_agreement(t);
    }

    /// A fatal error: the instance stops (a producer that was fenced).
    fn fenced(&mut self, c: usize, e: &EngineError) {
        self.stats.fenced += 1;
        self.clients[c].phase = Phase::Done;
        if self.clients[c].txn.is_some() {
            self.finish_txn(c, Outcome::Unknown);
        }
        let who = self.name(c);
        self.log(format!("{who} is fenced: {e}"));
    }

    fn on_answer(&mut self, c: usize, kind: Req, ans: Answer) {
        let who = self.name(c);
        if self.clients[c].zombie
            && let Answer::Ids(Err(e)) | Answer::Unit(Err(e)) = &ans
            && matches!(
                e,
                EngineError::ProducerFenced { .. }
                    | EngineError::InvalidProducerEpoch
                    | EngineError::InvalidProducerIdMapping { .. }
                    | EngineError::InvalidTxnState(_)
            )
        {
            self.stats.zombie_refused += 1;
        }
        self.log(format!("{who} gets {ans:?} for {kind:?}"));
        let retriable = |e: &EngineError| {
            matches!(
                e,
                EngineError::ConcurrentTransactions
                    | EngineError::CoordinatorNotAvailable
                    | EngineError::TxnCoordinatorUnavailable(_)
            )
        };
        match (kind, ans) {
            (Req::Init, Answer::Ids(Ok(ids))) => {
                let cl = &mut self.clients[c];
                cl.ids = Some(ids);
                cl.seqs.clear();
                cl.phase = Phase::Idle;
            }
            (kind @ Req::Init, Answer::Ids(Err(e))) if retriable(&e) => self.send(c, kind),
            (Req::Add(p), Answer::Unit(Ok(()))) => {
                self.clients[c].added.insert(p);
            }
            (Req::Produce { part, seq, records }, Answer::Unit(Ok(()))) => {
                let cl = &mut self.clients[c];
                cl.seqs.insert(part, seq + records.len() as u32);
                cl.produces_left = cl.produces_left.saturating_sub(1);
                cl.next_part = None;
            }
            (kind @ (Req::Add(_) | Req::Produce { .. }), Answer::Unit(Err(e))) if retriable(&e) => {
                self.send(c, kind)
            }
            (
                Req::Add(_) | Req::Produce { .. },
                Answer::Unit(Err(
                    EngineError::ProducerFenced { .. }
                    | EngineError::InvalidProducerEpoch
                    | EngineError::InvalidProducerIdMapping { .. }
                    | EngineError::InvalidTxnState(_),
                )),
            ) => {
                // Abortable here; an abort that is fenced ends the instance.
                self.clients[c].phase = Phase::Ending(false);
            }
            (Req::End(commit), Answer::Ids(Ok((pid, epoch)))) => {
                let cl = &mut self.clients[c];
                let old = cl.ids.expect("initialised");
                // Version 1 keeps the epoch; version 2 bumps it, or moves to
                // a fresh producer id at epoch 0.
                let fine = if cl.version == 1 {
                    old == (pid, epoch)
                } else {
                    (pid == old.0 && u32::from(epoch) == u32::from(old.1) + 1)
                        || (pid != old.0 && epoch == 0)
                };
                if !fine {
                    self.fail(format!(
                        "{who}'s EndTxn answered pid {pid} epoch {epoch}; it had {old:?}"
                    ));
                }
                if old != (pid, epoch) {
                    cl.ids = Some((pid, epoch));
                    cl.seqs.clear();
                }
                let outcome = if commit {
                    Outcome::Committed
                } else {
                    Outcome::Aborted
                };
                self.finish_txn(c, outcome);
            }
            (kind @ Req::End(_), Answer::Ids(Err(e))) if retriable(&e) => self.send(c, kind),
            (Req::End(true), Answer::Ids(Err(EngineError::InvalidTxnState(_)))) => {
                self.clients[c].phase = Phase::Ending(false);
            }
            (
                Req::End(_),
                Answer::Ids(Err(
                    e @ (EngineError::ProducerFenced { .. }
                    | EngineError::InvalidProducerEpoch
                    | EngineError::InvalidProducerIdMapping { .. }
                    | EngineError::InvalidTxnState(_)),
                )),
            ) => self.fenced(c, &e),
            (kind, ans) => self.fail(format!("{who}: unexpected answer {ans:?} to {kind:?}")),
        }
    }

    fn crash_client(&mut self) {
        let id = self.rng.below(IDS.len() as u64) as usize;
        let c = self.current[id];
        if self.clients[c].phase == Phase::Done || self.instances[id] >= MAX_INSTANCES {
            return;
        }
        self.stats.client_crashes += 1;
        if self.rng.chance(50) {
            // A zombie: it goes on with what it was doing.
            let cl = &mut self.clients[c];
            cl.zombie = true;
            cl.txns_left = cl.txns_left.min(1);
            let who = self.name(c);
            self.log(format!("{who} loses its id (a new instance starts)"));
        } else {
            self.clients[c].out = None;
            self.clients[c].phase = Phase::Done;
            if self.clients[c].txn.is_some() {
                self.finish_txn(c, Outcome::Unknown);
            }
            let who = self.name(c);
            self.log(format!("{who} crashed"));
        }
        self.spawn(id);
    }

    /// A version 2 client gives up on a batch in flight (its delivery
    /// timeout) and aborts; the batch may still reach the leader. Not done
    /// under version 1, whose epoch stays across transactions: a late batch
    /// there can join the next transaction, the flaw of the protocol that
    /// version 2 removes.
    fn abandon(&mut self) {
        let cands: Vec<usize> = (0..self.clients.len())
            .filter(|&c| {
                let cl = &self.clients[c];
                cl.version == 2
                    && cl.phase == Phase::InTxn
                    && matches!(
                        &cl.out,
                        Some(Out {
                            kind: Req::Produce { .. },
                            answer: None,
                            ..
                        })
                    )
            })
            .collect();
        if cands.is_empty() {
            return;
        }
        let c = cands[self.rng.below(cands.len() as u64) as usize];
        let cl = &mut self.clients[c];
        cl.out = None;
        cl.phase = Phase::Ending(false);
        let who = self.name(c);
        self.log(format!("{who} gives up on its batch and aborts"));
    }

    // ---- the scheduler ----

    fn tick(&mut self) {
        self.step += 1;
        match self.rng.below(100) {
            0..=29 => self.client_step(),
            30..=47 => self.leader_step(),
            48..=61 => self.persist_step(),
            62..=75 => self.marker_step(),
            76..=86 => self.clock_step(),
            87 if self.faults && self.coord.up => self.crash_coordinator(),
            88 if self.faults && self.flaps && self.coord.up => self.flap_coordinator(),
            87..=92 if !self.coord.up => self.restart_coordinator(),
            93 if self.faults => self.crash_client(),
            94 if self.faults => self.abandon(),
            _ => self.clock_step(),
        }
        self.check();
    }

    /// Memory equals the log for every id with no operation in flight.
    fn check(&self) {
        if !self.coord.up {
            return;
        }
        for (id, name) in IDS.iter().enumerate() {
            if self.coord.busy.contains(&id) {
                continue;
            }
            let last = self.coord.log.iter().rev().find(|(i, _)| *i == id);
            let durable = last.map(|(_, v)| txn::decode_value(name.to_string(), v));
            match (durable, self.coord.mem.get(&id)) {
                (None, None) => {}
                (Some(Some(d)), Some(m)) if d == *m => {}
                (Some(None), m) => self.fail(format!(
                    "{name}'s last record in the log cannot be decoded; memory has {m:?}"
                )),
                (d, m) => self.fail(format!("{name}: memory {m:?}, log {d:?}")),
            }
        }
    }

    fn settled(&self) -> bool {
        self.coord.up
            && self.coord.persists.is_empty()
            && self.coord.tasks.is_empty()
            && self.jobs.is_empty()
            && self.clients.iter().all(|c| c.phase == Phase::Done)
            && (self.coord.mem.values())
                .all(|m| !m.state.is_prepared() && m.state != TxnState::Ongoing)
    }

    /// Faults stop, clients finish, timeouts fire, markers are written.
    fn settle(&mut self) {
        self.faults = false;
        self.producing = false;
        if !self.coord.up {
            self.restart_coordinator();
        }
        for _ in 0..SETTLE_STEPS {
            if self.settled() {
                break;
            }
            self.tick();
        }
        if !self.settled() {
            let clients: Vec<String> = (0..self.clients.len())
                .filter(|&c| self.clients[c].phase != Phase::Done)
                .map(|c| {
                    let cl = &self.clients[c];
                    format!(
                        "{} {:?} ids {:?} waiting for {:?}",
                        self.name(c),
                        cl.phase,
                        cl.ids,
                        cl.out.as_ref().map(|o| &o.kind)
                    )
                })
                .collect();
            self.fail(format!(
                "not settled after {SETTLE_STEPS} steps: states {:?}; {} appends, {} marker tasks, {} batches in flight; clients {clients:?}",
                self.coord.mem.values().collect::<Vec<_>>(),
                self.coord.persists.len(),
                self.coord.tasks.len(),
                self.jobs.len()
            ));
        }
        for (p, part) in self.parts.iter().enumerate() {
            if let Some(o) = part.table.first_unstable() {
                self.fail(format!("p{p} has a transaction open from offset {}", o.0));
            }
        }
        // Every decision is still the one first seen.
        for (p, part) in self.parts.iter().enumerate() {
            for e in &part.log {
                if let Entry::Data {
                    base, pid, records, ..
                } = e
                {
                    let visible = part.visible(*pid, *base);
                    for r in records {
                        if self.decided.get(r) != Some(&visible) {
                            self.fail(format!(
                                "record {r} in p{p}: read_committed said {:?}, now {visible}",
                                self.decided.get(r)
                            ));
                        }
                    }
                }
            }
        }
        for t in 0..self.txns.len() {
            self.check_agreement(t);
        }
    }
}

/// A failed run: its message, the trace and the panic.
type Failure = (String, Vec<String>, Box<dyn std::any::Any + Send>);

fn run(seed: u64, steps: usize, trace_cap: usize) -> Result<Stats, Failure> {
    let exhaust = env("SIM_EXHAUST", 1) != 0;
    let mut w = World::new(seed, trace_cap, exhaust);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..steps {
            w.tick();
        }
        w.settle();
    }));
    outcome.map(|()| w.stats).map_err(|e| {
        let msg = (e.downcast_ref::<String>().cloned()).unwrap_or_else(|| "a panic".into());
        let trace = w.trace.iter().cloned().collect();
        (msg, trace, e)
    })
}

fn report(seed: u64, (msg, trace, e): Failure) -> ! {
    eprintln!(
        "seed {seed} failed ({msg}); last events:\n{}",
        trace.join("\n")
    );
    std::panic::resume_unwind(e)
}

#[test]
fn transactions_survive_crashes_at_every_step() {
    let steps = env("SIM_STEPS", 1000) as usize;
    if let Ok(one) = std::env::var("SIM_SEED") {
        let seed = one.parse().expect("SIM_SEED is a number");
        let s = run(seed, steps, usize::MAX).unwrap_or_else(|f| report(seed, f));
        eprintln!("seed {seed}: {s}");
        return;
    }
    let seeds = env("SIM_SEEDS", 2000);
    let keep_going = env("SIM_KEEP_GOING", 0) != 0;
    if keep_going {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let mut all = Stats::default();
    let mut failed = Vec::new();
    for seed in 0..seeds {
        match run(seed, steps, TRACE_LEN) {
            Ok(s) => all.add(&s),
            Err((msg, ..)) if keep_going => failed.push(msg),
            Err(f) => report(seed, f),
        }
    }
    if keep_going {
        let _ = std::panic::take_hook();
        for msg in &failed {
            eprintln!("{}", msg.chars().take(300).collect::<String>());
        }
        assert!(
            failed.is_empty(),
            "{} of {seeds} seeds failed",
            failed.len()
        );
    }
    // The runs must have done something: transactions of both outcomes,
    // crashes while transactions were prepared, retries recognised.
    assert!(
        all.committed as u64 > seeds * 2,
        "only {} commits over {seeds} seeds",
        all.committed
    );
    assert!(
        all.resumed as u64 > seeds / 4,
        "only {} prepared transactions resumed over {seeds} seeds",
        all.resumed
    );
    assert!(
        all.end_retries as u64 > seeds / 4,
        "only {} EndTxn retries answered over {seeds} seeds",
        all.end_retries
    );
    eprintln!("{seeds} seeds: {all}");
}
