//! One job-store test suite, run against every backend of the job queue
//! (`JobQueue`): each case on a store of its own, the same calls, the same
//! answers.

mod common;

use std::time::Duration;

use media_node::jobs::error::ErrorCode;
use media_node::jobs::model::{JobErrorInfo, JobStatus};
use media_node::jobs::queue::{
    self, CancelOutcome, DeliveryOutcome, DynQueue, Enqueued, Finish, Heartbeat, JobQueue, Lease,
    ListFilter, NewJob,
};
use serde_json::json;
use uuid::Uuid;

/// Runs every case, each on a new, empty store from `fresh`.
async fn suite(mut fresh: impl AsyncFnMut() -> DynQueue) {
    macro_rules! cases {
        ($($case:ident),+ $(,)?) => {$(
            eprintln!("queue suite: {}", stringify!($case));
            $case(fresh().await.as_ref()).await;
        )+};
    }
    cases!(
        claim_run_and_finish,
        expired_leases_are_reclaimed_then_exhausted,
        retry_waits_and_release_returns_the_attempt,
        idempotency_keys,
        cancel_queued_and_running,
        terminal_states_enqueue_webhooks,
        list_pages_newest_first,
        a_reclaimed_job_fences_out_its_former_holder,
        concurrent_claims_take_each_job_once,
        a_webhook_attempt_that_outlived_its_lease_records_nothing,
    );
}

#[tokio::test]
async fn sqlite_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    suite(async || {
        n += 1;
        let url = format!(
            "sqlite://{}",
            dir.path().join(format!("jobs-{n}.db")).display()
        );
        queue::open(&url).await.unwrap()
    })
    .await;
}

#[tokio::test]
async fn postgres_queue() {
    let server = common::postgres::Postgres::start().await;
    // Several nodes starting at once on one database: the schema is made once.
    let url = server.database("opened_at_once");
    let opened = futures_util::future::join_all((0..4).map(|_| queue::open(&url))).await;
    for result in &opened {
        assert!(
            result.is_ok(),
            "{:?}\n{}",
            result.as_ref().err(),
            server.log()
        );
    }
    let mut n = 0;
    suite(async || {
        n += 1;
        queue::open(&server.database(&format!("jobs_{n}")))
            .await
            .unwrap()
    })
    .await;
}

fn new_job(key: Option<(&str, &str)>) -> NewJob {
    NewJob {
        id: Uuid::now_v7(),
        spec: json!({"input": {"key": "a"}, "probe": true}),
        callback_url: None,
        max_attempts: 3,
        owner: None,
        idempotency: key.map(|(k, h)| (k.to_string(), h.to_string())),
    }
}

const LEASE: Duration = Duration::from_secs(30);

async fn claim_run_and_finish(q: &dyn JobQueue) {
    let Enqueued::Created(job) = q.enqueue(new_job(None)).await.unwrap() else {
        panic!("not created")
    };
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.node, None);
    let claimed = q.claim("node-a/w1", LEASE).await.unwrap().unwrap();
    assert_eq!(claimed.id, job.id);
    assert_eq!(claimed.attempts, 1);
    assert_eq!(claimed.node.as_deref(), Some("node-a"));
    let w1 = Lease::of(&claimed, "node-a/w1");
    let w2 = Lease::of(&claimed, "w2");
    assert!(
        q.claim("w2", LEASE).await.unwrap().is_none(),
        "claimed twice"
    );
    assert_eq!(
        q.heartbeat(&w1, LEASE, 40).await.unwrap(),
        Heartbeat::Held {
            cancel_requested: false
        }
    );
    assert_eq!(q.heartbeat(&w2, LEASE, 40).await.unwrap(), Heartbeat::Lost);
    assert!(!q.finish(&w2, Finish::Canceled).await.unwrap());
    assert!(
        q.finish(&w1, Finish::Succeeded(json!({"ok": true})))
            .await
            .unwrap()
    );
    let done = q.get(job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.progress, 100);
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert_eq!(done.node.as_deref(), Some("node-a"), "the node that ran it");
}

async fn expired_leases_are_reclaimed_then_exhausted(q: &dyn JobQueue) {
    let mut job = new_job(None);
    job.max_attempts = 2;
    q.enqueue(job).await.unwrap();
    let short = Duration::from_millis(1);
    let first = q.claim("dead-node", short).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = q.claim("live-node", short).await.unwrap().unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempts, 2);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(q.claim("third", LEASE).await.unwrap().is_none());
    assert_eq!(q.reap_expired().await.unwrap(), 1);
    let failed = q.get(first.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.unwrap().code, ErrorCode::AttemptsExhausted);
}

async fn retry_waits_and_release_returns_the_attempt(q: &dyn JobQueue) {
    q.enqueue(new_job(None)).await.unwrap();
    let job = q.claim("w", LEASE).await.unwrap().unwrap();
    let error = JobErrorInfo {
        code: ErrorCode::StoreUnavailable,
        message: "down".into(),
    };
    let delay = Duration::from_secs(60);
    assert!(
        q.finish(&Lease::of(&job, "w"), Finish::Retry { error, delay })
            .await
            .unwrap()
    );
    assert!(
        q.claim("w", LEASE).await.unwrap().is_none(),
        "retried before its time"
    );

    q.enqueue(new_job(None)).await.unwrap();
    let other = q.claim("w", LEASE).await.unwrap().unwrap();
    assert!(
        q.finish(&Lease::of(&other, "w"), Finish::Release)
            .await
            .unwrap()
    );
    let released = q.get(other.id).await.unwrap().unwrap();
    assert_eq!(released.status, JobStatus::Queued);
    assert_eq!(released.attempts, 0);
}

async fn idempotency_keys(q: &dyn JobQueue) {
    let a = q.enqueue(new_job(Some(("k1", "h1")))).await.unwrap();
    let b = q.enqueue(new_job(Some(("k1", "h1")))).await.unwrap();
    let c = q.enqueue(new_job(Some(("k1", "h2")))).await.unwrap();
    let (Enqueued::Created(a), Enqueued::Existing(b), Enqueued::Conflict(c)) = (a, b, c) else {
        panic!("wrong outcomes")
    };
    assert_eq!(a.id, b.id);
    assert_eq!(a.id, c.id);
}

async fn cancel_queued_and_running(q: &dyn JobQueue) {
    let Enqueued::Created(queued) = q.enqueue(new_job(None)).await.unwrap() else {
        panic!()
    };
    assert!(matches!(
        q.cancel(queued.id).await.unwrap(),
        Some(CancelOutcome::Canceled(_))
    ));
    q.enqueue(new_job(None)).await.unwrap();
    let running = q.claim("w", LEASE).await.unwrap().unwrap();
    assert!(matches!(
        q.cancel(running.id).await.unwrap(),
        Some(CancelOutcome::Requested(_))
    ));
    assert_eq!(
        q.heartbeat(&Lease::of(&running, "w"), LEASE, 1)
            .await
            .unwrap(),
        Heartbeat::Held {
            cancel_requested: true
        }
    );
    assert!(
        q.finish(&Lease::of(&running, "w"), Finish::Canceled)
            .await
            .unwrap()
    );
    assert!(matches!(
        q.cancel(running.id).await.unwrap(),
        Some(CancelOutcome::AlreadyFinished(_))
    ));
    assert!(q.cancel(Uuid::now_v7()).await.unwrap().is_none());
}

async fn terminal_states_enqueue_webhooks(q: &dyn JobQueue) {
    let mut job = new_job(None);
    job.callback_url = Some("https://example.com/hook".into());
    q.enqueue(job).await.unwrap();
    let running = q.claim("w", LEASE).await.unwrap().unwrap();
    assert!(q.claim_webhook(LEASE).await.unwrap().is_none());
    q.finish(&Lease::of(&running, "w"), Finish::Succeeded(json!({})))
        .await
        .unwrap();
    let delivery = q.claim_webhook(LEASE).await.unwrap().unwrap();
    assert_eq!(delivery.job_id, running.id);
    assert_eq!(delivery.attempts, 1);
    assert!(
        q.claim_webhook(LEASE).await.unwrap().is_none(),
        "leased twice"
    );
    assert!(
        q.finish_webhook(&delivery, DeliveryOutcome::Delivered)
            .await
            .unwrap()
    );
    assert!(
        !q.finish_webhook(&delivery, DeliveryOutcome::Delivered)
            .await
            .unwrap(),
        "recorded twice"
    );
}

async fn list_pages_newest_first(q: &dyn JobQueue) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let Enqueued::Created(j) = q.enqueue(new_job(None)).await.unwrap() else {
            panic!()
        };
        ids.push(j.id);
    }
    let page = q
        .list(&ListFilter {
            status: None,
            limit: 2,
            before: None,
            owner: None,
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|j| j.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    let next = q
        .list(&ListFilter {
            status: Some(JobStatus::Queued),
            limit: 10,
            before: Some(ids[3]),
            owner: None,
        })
        .await
        .unwrap();
    assert_eq!(next.len(), 3);
    // An owner's jobs, and nobody else's.
    let mut owned = new_job(None);
    owned.owner = Some("shop:42".into());
    let Enqueued::Created(owned) = q.enqueue(owned).await.unwrap() else {
        panic!()
    };
    assert_eq!(owned.owner.as_deref(), Some("shop:42"));
    let theirs = q
        .list(&ListFilter {
            status: None,
            limit: 10,
            before: None,
            owner: Some("shop:42".into()),
        })
        .await
        .unwrap();
    assert_eq!(theirs.iter().map(|j| j.id).collect::<Vec<_>>(), [owned.id]);
    let counts = q.status_counts().await.unwrap();
    assert!(counts.contains(&(JobStatus::Queued, 6)));
}

/// A holder whose lease expired and whose job was claimed again, even by a
/// worker of the same name (two nodes configured with one node id), can
/// neither renew nor finish: the new attempt's result stands.
async fn a_reclaimed_job_fences_out_its_former_holder(q: &dyn JobQueue) {
    q.enqueue(new_job(None)).await.unwrap();
    let short = Duration::from_millis(1);
    let first = q.claim("node/w0", short).await.unwrap().unwrap();
    let stale = Lease::of(&first, "node/w0");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = q.claim("node/w0", LEASE).await.unwrap().unwrap();
    assert_eq!((second.id, second.attempts), (first.id, 2));
    let current = Lease::of(&second, "node/w0");
    assert_eq!(
        q.heartbeat(&stale, LEASE, 90).await.unwrap(),
        Heartbeat::Lost
    );
    assert!(
        !q.finish(&stale, Finish::Succeeded(json!({"from": "stale"})))
            .await
            .unwrap()
    );
    assert!(
        q.finish(&current, Finish::Succeeded(json!({"from": "current"})))
            .await
            .unwrap()
    );
    let done = q.get(first.id).await.unwrap().unwrap();
    assert_eq!(done.result, Some(json!({"from": "current"})));
    assert_eq!(done.attempts, 2);
}

/// Many workers claiming at once: every job is taken exactly once.
async fn concurrent_claims_take_each_job_once(q: &dyn JobQueue) {
    const JOBS: usize = 40;
    for _ in 0..JOBS {
        q.enqueue(new_job(None)).await.unwrap();
    }
    let claims = futures_util::future::join_all((0..8).map(|w| async move {
        let owner = format!("w{w}");
        let mut mine = Vec::new();
        while let Some(job) = q.claim(&owner, LEASE).await.unwrap() {
            mine.push(job.id);
        }
        mine
    }))
    .await;
    let mut all: Vec<Uuid> = claims.into_iter().flatten().collect();
    assert_eq!(all.len(), JOBS, "claims");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), JOBS, "a job was claimed twice");
}

/// A delivery attempt that took longer than its lease was claimed again
/// (by another node, say): the late attempt records nothing.
async fn a_webhook_attempt_that_outlived_its_lease_records_nothing(q: &dyn JobQueue) {
    let mut job = new_job(None);
    job.callback_url = Some("https://example.com/hook".into());
    q.enqueue(job).await.unwrap();
    let running = q.claim("w", LEASE).await.unwrap().unwrap();
    q.finish(&Lease::of(&running, "w"), Finish::Canceled)
        .await
        .unwrap();
    let slow = q
        .claim_webhook(Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = q.claim_webhook(LEASE).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (slow.id, 2));
    let gave_up = DeliveryOutcome::GaveUp {
        error: "late".into(),
    };
    assert!(!q.finish_webhook(&slow, gave_up).await.unwrap());
    assert!(
        q.finish_webhook(&again, DeliveryOutcome::Delivered)
            .await
            .unwrap()
    );
}
