//! What Metadata, DescribeCluster, DescribeTopicPartitions and FindCoordinator
//! report about brokers and replicas: this broker alone, or the cluster image.

use brook_engine::cluster::NO_LEADER;

use crate::server::ShardServer;

/// One broker as clients are told to reach it.
pub struct BrokerView {
    pub node: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// One partition's replicas as clients see them.
pub struct PartitionView {
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

/// The live brokers, as clients of listener `listener` (an index of
/// `NetConfig::listeners`) reach them: this one alone, or every unfenced
/// broker of the cluster at its listener of the same name. Before any
/// registration has committed, a serving broker lists itself, so a client
/// bootstrapping from it is never told of no broker.
pub fn brokers(srv: &ShardServer, listener: usize) -> Vec<BrokerView> {
    let cfg = &srv.config;
    let l = &cfg.listeners[listener];
    let me = BrokerView {
        node: cfg.node_id,
        host: l.advertise_host.clone(),
        port: l.advertise_port,
        rack: None,
    };
    let Some(img) = srv.shard.cluster_image() else {
        return vec![me];
    };
    let mut out: Vec<BrokerView> = (img.brokers.values())
        .filter(|b| !b.fenced)
        .map(|b| {
            let (host, port) = b.endpoint(&l.name);
            BrokerView {
                node: b.node,
                host: host.to_string(),
                port,
                rack: b.rack.clone(),
            }
        })
        .collect();
    if out.is_empty() {
        out.push(me);
    }
    out
}

/// The broker clients are told is the controller: the one answering. Every
/// broker takes controller requests (CreateTopics, DeleteTopics, …) and
/// passes them to the quorum, and this one is certainly reachable; a
/// registered broker that died would stay "live" until its session ends.
pub fn controller_id(srv: &ShardServer) -> i32 {
    srv.config.node_id
}

/// Partition `p` of `topic`. Alone, this broker leads every partition it
/// could open (epoch 0) and lists the rest as offline replicas.
pub fn partition(srv: &ShardServer, topic: &str, p: u32, offline_here: bool) -> PartitionView {
    let me = srv.config.node_id;
    match srv.shard.cluster_image() {
        Some(img) => match img.partition(topic, p) {
            Some(pi) => {
                let live = |n: &i32| img.brokers.get(n).is_some_and(|b| !b.fenced);
                PartitionView {
                    leader: pi.leader,
                    leader_epoch: pi.leader_epoch,
                    replicas: pi.replicas.clone(),
                    isr: pi.isr.clone(),
                    offline: (pi.replicas.iter())
                        .filter(|n| {
                            !live(n) || pi.offline.contains(n) || (**n == me && offline_here)
                        })
                        .copied()
                        .collect(),
                }
            }
            None => PartitionView {
                leader: NO_LEADER,
                leader_epoch: 0,
                replicas: vec![],
                isr: vec![],
                offline: vec![],
            },
        },
        None if offline_here => PartitionView {
            leader: NO_LEADER,
            leader_epoch: 0,
            replicas: vec![me],
            isr: vec![],
            offline: vec![me],
        },
        None => PartitionView {
            leader: me,
            leader_epoch: 0,
            replicas: vec![me],
            isr: vec![me],
            offline: vec![],
        },
    }
}
