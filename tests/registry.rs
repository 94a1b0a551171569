//! One registry test suite, run against every backend of the stream registry
//! (`StreamRegistry`): the same calls, the same answers.

mod common;

use media_node::live::Track;
use media_node::live::key;
use std::time::Duration;

use media_node::live::registry::{
    self, Claim, PinRecord, Renewal, SegmentRecord, StreamRegistry, StreamState, UploadStats,
};
use uuid::Uuid;

async fn suite(reg: &dyn StreamRegistry) {
    reg.check().await.expect("the registry answers");
    a_stream_goes_idle_live_ended_and_its_key_dies_with_it(reg).await;
    segments_and_pins_are_kept_in_order(reg).await;
    one_node_holds_a_stream_until_its_lease_lapses_or_its_publisher_leaves(reg).await;
    a_lapsed_stream_is_adopted_once_after_its_window(reg).await;
}

const LEASE: Duration = Duration::from_secs(30);

async fn new_stream(reg: &dyn StreamRegistry) -> Uuid {
    let id = Uuid::now_v7();
    reg.create(id, "s", "default", key::generate().digest, None)
        .await
        .unwrap();
    id
}

async fn one_node_holds_a_stream_until_its_lease_lapses_or_its_publisher_leaves(
    reg: &dyn StreamRegistry,
) {
    let id = new_stream(reg).await;
    assert_eq!(
        reg.claim(id, "a", LEASE, true).await.unwrap(),
        Claim::Taken { from: None }
    );
    assert_eq!(
        reg.get(id).await.unwrap().unwrap().node.as_deref(),
        Some("a")
    );
    // A newcomer on another node is held while a's publisher is on air…
    let Claim::Held { node, expires_at } = reg.claim(id, "b", LEASE, true).await.unwrap() else {
        panic!("b took a fresh lease")
    };
    assert_eq!(node, "a");
    // …and sees a's renewals move the lease on.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        reg.renew(id, "a", LEASE, true).await.unwrap(),
        Renewal::Held { ended: false }
    );
    let Claim::Held {
        expires_at: later, ..
    } = reg.claim(id, "b", LEASE, true).await.unwrap()
    else {
        panic!("b took a renewed lease")
    };
    assert!(later > expires_at, "{later} > {expires_at}");
    // a's publisher left: b takes the stream over at once, and a has lost it.
    reg.renew(id, "a", LEASE, false).await.unwrap();
    assert_eq!(
        reg.claim(id, "b", LEASE, true).await.unwrap(),
        Claim::Taken {
            from: Some("a".into())
        }
    );
    assert_eq!(
        reg.renew(id, "a", LEASE, true).await.unwrap(),
        Renewal::Lost
    );
    assert!(
        !reg.end_held(id, "a", "publisher_left").await.unwrap(),
        "a may not end b's stream"
    );
    // b's lease lapses (b died): c takes over.
    reg.renew(id, "b", Duration::from_millis(1), true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        reg.claim(id, "c", LEASE, true).await.unwrap(),
        Claim::Taken {
            from: Some("b".into())
        }
    );
    // The API ends it on any node: the holder learns at its next renewal.
    assert!(reg.end(id, "deleted").await.unwrap());
    assert_eq!(
        reg.renew(id, "c", LEASE, false).await.unwrap(),
        Renewal::Held { ended: true }
    );
    assert_eq!(reg.claim(id, "d", LEASE, true).await.unwrap(), Claim::Ended);

    // A stream's own node ends it when its reconnect window runs out.
    let id = new_stream(reg).await;
    reg.claim(id, "a", LEASE, false).await.unwrap();
    assert!(reg.end_held(id, "a", "publisher_left").await.unwrap());
    // A node shutting down lets its streams go at once.
    let id = new_stream(reg).await;
    reg.claim(id, "a", LEASE, true).await.unwrap();
    reg.release(id, "a").await.unwrap();
    assert_eq!(
        reg.claim(id, "b", LEASE, true).await.unwrap(),
        Claim::Taken {
            from: Some("a".into())
        }
    );
}

async fn a_lapsed_stream_is_adopted_once_after_its_window(reg: &dyn StreamRegistry) {
    let id = new_stream(reg).await;
    let idle = new_stream(reg).await;
    reg.claim(id, "a", Duration::from_millis(1), true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let orphans = reg.orphans(100).await.unwrap();
    let orphan = orphans
        .iter()
        .find(|o| o.record.id == id)
        .expect("the lapsed stream is an orphan");
    assert!(orphan.expired_ms >= 20, "{}", orphan.expired_ms);
    assert!(
        orphans.iter().all(|o| o.record.id != idle),
        "a stream nobody published to is no orphan"
    );
    // Within the reconnect window it stays live for its publisher…
    let window = Duration::from_secs(60);
    assert!(
        !reg.adopt_orphan(id, "b", LEASE, window, "node_lost")
            .await
            .unwrap()
    );
    // …after it, exactly one node ends it and writes its replay.
    let short = Duration::from_millis(10);
    assert!(
        reg.adopt_orphan(id, "b", LEASE, short, "node_lost")
            .await
            .unwrap()
    );
    assert!(
        !reg.adopt_orphan(id, "c", LEASE, short, "node_lost")
            .await
            .unwrap()
    );
    let s = reg.get(id).await.unwrap().unwrap();
    assert_eq!(s.state, StreamState::Ended);
    assert_eq!(s.end_reason.as_deref(), Some("node_lost"));
    assert_eq!((s.node.as_deref(), s.key_digest), (Some("b"), None));
    assert!(
        reg.orphans(100)
            .await
            .unwrap()
            .iter()
            .all(|o| o.record.id != id)
    );
    reg.set_replay_written(id).await.unwrap();
}

#[tokio::test]
async fn sqlite_registry() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let reg = registry::open(&url).await.unwrap();
    // Opening again applies nothing twice.
    registry::open(&url).await.unwrap();
    suite(reg.as_ref()).await;
}

#[tokio::test]
async fn postgres_registry() {
    let server = common::postgres::Postgres::start().await;
    let url = server.database("registry");
    // Several nodes starting at once: each migrates, the schema is made once.
    let opened = futures_util::future::join_all((0..4).map(|_| registry::open(&url))).await;
    for result in &opened {
        assert!(
            result.is_ok(),
            "{:?}\n{}",
            result.as_ref().err(),
            server.log()
        );
    }
    let reg = registry::open(&url).await.unwrap();
    suite(reg.as_ref()).await;
}

async fn a_stream_goes_idle_live_ended_and_its_key_dies_with_it(reg: &dyn StreamRegistry) {
    let new = key::generate();
    let id = Uuid::now_v7();
    let s = reg
        .create(id, "launch", "default", new.digest, Some("creator:7"))
        .await
        .unwrap();
    assert_eq!(s.state, StreamState::Idle);
    assert_eq!(s.owner.as_deref(), Some("creator:7"));
    assert_eq!(reg.by_key(new.digest).await.unwrap().unwrap().id, id);
    let theirs = reg.list(None, Some("creator:7"), 10).await.unwrap();
    assert_eq!(theirs.iter().map(|s| s.id).collect::<Vec<_>>(), [id]);
    assert!(
        reg.list(None, Some("creator:8"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let idle = reg
        .list(Some(StreamState::Idle), Some("creator:7"), 10)
        .await
        .unwrap();
    assert_eq!(idle.len(), 1);
    assert_eq!(
        reg.claim(id, "n1", LEASE, true).await.unwrap(),
        Claim::Taken { from: None }
    );
    let s = reg.get(id).await.unwrap().unwrap();
    assert_eq!(s.state, StreamState::Live);
    assert!(s.started_at.is_some());
    assert!(reg.end(id, "deleted").await.unwrap());
    assert!(!reg.end(id, "again").await.unwrap());
    assert!(reg.by_key(new.digest).await.unwrap().is_none());
    let s = reg.get(id).await.unwrap().unwrap();
    assert_eq!((s.state, s.key_digest), (StreamState::Ended, None));
    assert_eq!(
        reg.claim(id, "n1", LEASE, true).await.unwrap(),
        Claim::Ended,
        "ended is final"
    );
    reg.set_replay_written(id).await.unwrap();
    assert!(reg.get(id).await.unwrap().unwrap().replay_written);
}

async fn segments_and_pins_are_kept_in_order(reg: &dyn StreamRegistry) {
    let id = Uuid::now_v7();
    let track = Track::relayed(id);
    reg.create(id, "s", "default", key::generate().digest, None)
        .await
        .unwrap();
    for sequence in [1, 0, 2] {
        let seg = SegmentRecord {
            sequence,
            duration_us: 2_000_000,
            started_at: 1000 + sequence as i64 * 2000,
            discontinuity: sequence == 2,
            independent: true,
            bytes: 100,
            stored: false,
        };
        reg.add_segment(&track, &seg).await.unwrap();
        reg.add_segment(&track, &seg).await.unwrap();
    }
    let stats = UploadStats {
        segments_uploaded: 1,
        ..Default::default()
    };
    let first = reg.segments(&track).await.unwrap().remove(0);
    // A rendition's rows are its own, and do not count for the stream.
    let rung = Track::rendition(id, "240p");
    reg.segment_stored(&rung, &first, None).await.unwrap();
    assert_eq!(reg.segments(&rung).await.unwrap().len(), 1);
    assert_eq!(reg.get(id).await.unwrap().unwrap().segments_uploaded, 0);
    reg.segment_stored(&track, &first, Some(stats))
        .await
        .unwrap();
    let segs = reg.segments(&track).await.unwrap();
    assert_eq!(
        segs.iter()
            .map(|s| (s.sequence, s.stored))
            .collect::<Vec<_>>(),
        [(0, true), (1, false), (2, false)]
    );
    assert_eq!(reg.get(id).await.unwrap().unwrap().segments_uploaded, 1);

    let pin = PinRecord {
        id: "p1".into(),
        spec: "{}".into(),
        attributes: "X-PRODUCT-ID=\"p\"".into(),
        start_ms: 5,
        end_ms: None,
    };
    assert!(reg.add_pin(id, &pin).await.unwrap());
    assert!(!reg.add_pin(id, &pin).await.unwrap());
    assert_eq!(reg.end_pin(id, "p1").await.unwrap(), Some(true));
    assert_eq!(reg.end_pin(id, "p1").await.unwrap(), Some(false));
    assert_eq!(reg.end_pin(id, "nope").await.unwrap(), None);
    assert!(reg.pins(id).await.unwrap()[0].end_ms.is_some());
}
