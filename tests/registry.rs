//! One registry test suite, run against every backend of the stream registry
//! (`StreamRegistry`): the same calls, the same answers.

mod common;

use media_node::live::Track;
use media_node::live::key;
use media_node::live::registry::{
    self, PinRecord, SegmentRecord, StreamRegistry, StreamState, UploadStats,
};
use uuid::Uuid;

async fn suite(reg: &dyn StreamRegistry) {
    reg.check().await.expect("the registry answers");
    a_stream_goes_idle_live_ended_and_its_key_dies_with_it(reg).await;
    segments_and_pins_are_kept_in_order(reg).await;
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
        .create(id, "launch", "default", new.digest)
        .await
        .unwrap();
    assert_eq!(s.state, StreamState::Idle);
    assert_eq!(reg.by_key(new.digest).await.unwrap().unwrap().id, id);
    assert!(reg.set_live(id, "n1", None).await.unwrap());
    let s = reg.get(id).await.unwrap().unwrap();
    assert_eq!(s.state, StreamState::Live);
    assert!(s.started_at.is_some());
    assert!(reg.end(id, "deleted").await.unwrap());
    assert!(!reg.end(id, "again").await.unwrap());
    assert!(reg.by_key(new.digest).await.unwrap().is_none());
    let s = reg.get(id).await.unwrap().unwrap();
    assert_eq!((s.state, s.key_digest), (StreamState::Ended, None));
    assert!(
        !reg.set_live(id, "n1", None).await.unwrap(),
        "ended is final"
    );
    reg.set_replay_written(id).await.unwrap();
    assert!(reg.get(id).await.unwrap().unwrap().replay_written);
}

async fn segments_and_pins_are_kept_in_order(reg: &dyn StreamRegistry) {
    let id = Uuid::now_v7();
    let track = Track::relayed(id);
    reg.create(id, "s", "default", key::generate().digest)
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
