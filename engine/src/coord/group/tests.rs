use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

fn cfg() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: Duration::from_millis(100),
        ..GroupConfig::default()
    }
}

fn req(member: Option<&str>, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group: "g".into(),
        member_id: member.map(str::to_string),
        instance_id: instance.map(str::to_string),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
        require_known_member_id: true,
    }
}

fn now_result<T: std::fmt::Debug>(r: Reply<T>) -> T {
    match r {
        Reply::Now(v) => v,
        Reply::Later(_) => panic!("expected an immediate answer"),
    }
}

fn later<T>(r: Reply<T>) -> oneshot::Receiver<T> {
    match r {
        Reply::Later(rx) => rx,
        Reply::Now(_) => panic!("expected a deferred answer"),
    }
}

/// Runs the v4+ two-step join and returns the member id and the parked join.
fn join_new(g: &mut Group, t: Instant) -> (String, oneshot::Receiver<JoinResult>) {
    let id = match now_result(g.join(req(None, None), &cfg(), t)) {
        Err(EngineError::MemberIdRequired(id)) => id,
        other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
    };
    let rx = later(g.join(req(Some(&id), None), &cfg(), t));
    (id, rx)
}

fn take<T>(mut rx: oneshot::Receiver<T>) -> T {
    rx.try_recv().expect("sender alive").expect("answer ready")
}

/// Three members join, the leader assigns, everybody is Stable.
fn stable_group_of_three(t: Instant) -> (Group, Vec<String>) {
    let mut g = Group::new("g".into());
    let joins: Vec<_> = (0..3).map(|_| join_new(&mut g, t)).collect();
    assert_eq!(g.state, GroupState::PreparingRebalance);
    g.tick(&cfg(), t + Duration::from_millis(50));
    assert_eq!(
        g.state,
        GroupState::PreparingRebalance,
        "initial delay not over"
    );
    g.tick(&cfg(), t + Duration::from_millis(150));
    assert_eq!(g.state, GroupState::CompletingRebalance);
    let mut ids = Vec::new();
    let mut leader_members = 0;
    for (id, rx) in joins {
        let r = take(rx).unwrap();
        assert_eq!(r.generation, 1);
        assert_eq!(r.protocol, "range");
        if r.leader == id {
            leader_members = r.members.len();
        }
        ids.push(id);
    }
    assert_eq!(leader_members, 3, "the leader sees every member");
    let leader = g.leader.clone().unwrap();
    let followers: Vec<_> = ids
        .iter()
        .filter(|i| **i != leader)
        .map(|i| later(g.sync(i, 1, None, vec![], t)))
        .collect();
    let assignments = ids
        .iter()
        .map(|i| (i.clone(), Bytes::from(format!("for-{i}"))))
        .collect();
    let mine = later(g.sync(&leader, 1, None, assignments, t));
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(take(mine).unwrap(), Bytes::from(format!("for-{leader}")));
    for rx in followers {
        assert!(take(rx).unwrap().starts_with(b"for-"));
    }
    (g, ids)
}

#[test]
fn members_join_sync_and_heartbeat() {
    let t = Instant::now();
    let (mut g, ids) = stable_group_of_three(t);
    for id in &ids {
        g.heartbeat(id, 1, None, t + Duration::from_secs(1))
            .unwrap();
    }
    assert_eq!(
        g.heartbeat(&ids[0], 0, None, t),
        Err(EngineError::IllegalGeneration)
    );
    assert_eq!(
        g.heartbeat("nobody", 1, None, t),
        Err(EngineError::UnknownMemberId)
    );
}

#[test]
fn a_silent_member_is_expired_and_the_rest_rebalance() {
    let t = Instant::now();
    let (mut g, ids) = stable_group_of_three(t);
    let later_t = t + Duration::from_secs(8);
    g.heartbeat(&ids[0], 1, None, later_t).unwrap();
    g.heartbeat(&ids[1], 1, None, later_t).unwrap();
    g.tick(&cfg(), t + Duration::from_secs(11));
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert!(!g.members.contains_key(&ids[2]));
    assert_eq!(
        g.heartbeat(&ids[0], 1, None, later_t),
        Err(EngineError::RebalanceInProgress)
    );
    let t2 = t + Duration::from_secs(12);
    let a = later(g.join(req(Some(&ids[0]), None), &cfg(), t2));
    let b = later(g.join(req(Some(&ids[1]), None), &cfg(), t2));
    assert_eq!(
        g.state,
        GroupState::CompletingRebalance,
        "all survivors rejoined"
    );
    assert_eq!(take(a).unwrap().generation, 2);
    assert_eq!(take(b).unwrap().generation, 2);
    assert_eq!(
        g.check_commit(&ids[0], 1, None),
        Err(EngineError::IllegalGeneration)
    );
}

#[test]
fn leaving_triggers_a_rebalance_and_the_last_leaver_empties_the_group() {
    let t = Instant::now();
    let (mut g, ids) = stable_group_of_three(t);
    g.leave(&ids[0], None, &cfg(), t).unwrap();
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(
        g.leave(&ids[0], None, &cfg(), t),
        Err(EngineError::UnknownMemberId)
    );
    g.leave(&ids[1], None, &cfg(), t).unwrap();
    g.leave(&ids[2], None, &cfg(), t).unwrap();
    assert_eq!(g.state, GroupState::Empty);
    assert!(g.members.is_empty());
    assert_eq!(
        g.check_commit("", -1, None),
        Ok(()),
        "simple commits are allowed on an empty group"
    );
}

#[test]
fn a_static_member_rejoins_without_a_rebalance() {
    let t = Instant::now();
    let mut g = Group::new("g".into());
    let rx = later(g.join(req(None, Some("host-1")), &cfg(), t));
    g.tick(&cfg(), t + Duration::from_millis(150));
    let first = take(rx).unwrap();
    let assignment = vec![(first.member_id.clone(), Bytes::from_static(b"a"))];
    let _ = take(later(g.sync(
        &first.member_id,
        1,
        Some("host-1"),
        assignment,
        t,
    )));
    assert_eq!(g.state, GroupState::Stable);
    // The process restarts: a new join with the same instance id and no member id.
    let again = now_result(g.join(req(None, Some("host-1")), &cfg(), t)).unwrap();
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(again.generation, 1);
    assert_ne!(again.member_id, first.member_id);
    assert_eq!(
        g.heartbeat(&first.member_id, 1, Some("host-1"), t),
        Err(EngineError::FencedInstanceId)
    );
    assert_eq!(
        now_result(g.sync(&again.member_id, 1, Some("host-1"), vec![], t)).unwrap(),
        Bytes::from_static(b"a")
    );
}

#[test]
fn protocols_must_be_compatible() {
    let t = Instant::now();
    let mut g = Group::new("g".into());
    let (_id, _rx) = join_new(&mut g, t);
    let mut other = req(None, None);
    other.protocols = vec![("roundrobin".into(), Bytes::new())];
    assert!(matches!(
        now_result(g.join(other, &cfg(), t)),
        Err(EngineError::InconsistentGroupProtocol)
    ));
    let mut short = req(None, None);
    short.session_timeout = Duration::from_millis(10);
    assert!(matches!(
        now_result(g.join(short, &cfg(), t)),
        Err(EngineError::InvalidSessionTimeout)
    ));
}

#[test]
fn a_member_that_never_rejoins_is_dropped_at_the_rebalance_deadline() {
    let t = Instant::now();
    let (mut g, ids) = stable_group_of_three(t);
    // The leader rejoining forces a rebalance; the followers keep heartbeating
    // (so their sessions live) but never rejoin.
    let leader = g.leader.clone().unwrap();
    let rx = later(g.join(req(Some(&leader), None), &cfg(), t));
    assert_eq!(g.state, GroupState::PreparingRebalance);
    for s in [9, 18, 27] {
        let at = t + Duration::from_secs(s);
        for f in ids.iter().filter(|i| **i != leader) {
            assert_eq!(
                g.heartbeat(f, 1, None, at),
                Err(EngineError::RebalanceInProgress)
            );
        }
        g.tick(&cfg(), at);
    }
    g.tick(&cfg(), t + Duration::from_secs(29));
    assert_eq!(
        g.state,
        GroupState::PreparingRebalance,
        "rebalance timeout not over"
    );
    g.tick(&cfg(), t + Duration::from_secs(31));
    assert_eq!(g.state, GroupState::CompletingRebalance);
    assert_eq!(
        g.members.keys().cloned().collect::<Vec<_>>(),
        vec![leader.clone()]
    );
    let r = take(rx).unwrap();
    assert_eq!((r.generation, r.members.len()), (2, 1));
}

#[test]
fn subscription_topics_read_every_version_and_refuse_garbage() {
    // Version 1: topics "a" and "bc", then user data and more (ignored).
    let mut md = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
    md.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(
        subscription_topics(&md),
        Some(vec!["a".into(), "bc".into()])
    );
    assert_eq!(subscription_topics(&[0, 0, 0, 0, 0, 0]), Some(vec![]));
    for bad in [
        &b""[..],
        b"\0",
        b"\0\0\0\0\0\x05\0\x01a",
        b"\0\0\0\0\0\x01\xff\xff",
    ] {
        assert_eq!(subscription_topics(bad), None, "{bad:?}");
    }
}
