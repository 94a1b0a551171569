//! One job-store test suite, run against every backend of the job queue
//! (`JobQueue`): each case on a store of its own, the same calls, the same
//! answers.

use std::time::Duration;

use media_node::jobs::error::ErrorCode;
use media_node::jobs::model::{JobErrorInfo, JobStatus};
use media_node::jobs::queue::{
    self, CancelOutcome, DeliveryOutcome, DynQueue, Enqueued, Finish, Heartbeat, JobQueue,
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

fn new_job(key: Option<(&str, &str)>) -> NewJob {
    NewJob {
        id: Uuid::now_v7(),
        spec: json!({"input": {"key": "a"}, "probe": true}),
        callback_url: None,
        max_attempts: 3,
        idempotency: key.map(|(k, h)| (k.to_string(), h.to_string())),
    }
}

const LEASE: Duration = Duration::from_secs(30);

async fn claim_run_and_finish(q: &dyn JobQueue) {
    let Enqueued::Created(job) = q.enqueue(new_job(None)).await.unwrap() else {
        panic!("not created")
    };
    assert_eq!(job.status, JobStatus::Queued);
    let claimed = q.claim("w1", LEASE).await.unwrap().unwrap();
    assert_eq!(claimed.id, job.id);
    assert_eq!(claimed.attempts, 1);
    assert!(
        q.claim("w2", LEASE).await.unwrap().is_none(),
        "claimed twice"
    );
    assert_eq!(
        q.heartbeat(job.id, "w1", LEASE, 40).await.unwrap(),
        Heartbeat::Held {
            cancel_requested: false
        }
    );
    assert_eq!(
        q.heartbeat(job.id, "w2", LEASE, 40).await.unwrap(),
        Heartbeat::Lost
    );
    assert!(!q.finish(job.id, "w2", Finish::Canceled).await.unwrap());
    assert!(
        q.finish(job.id, "w1", Finish::Succeeded(json!({"ok": true})))
            .await
            .unwrap()
    );
    let done = q.get(job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.progress, 100);
    assert_eq!(done.result, Some(json!({"ok": true})));
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
        q.finish(job.id, "w", Finish::Retry { error, delay })
            .await
            .unwrap()
    );
    assert!(
        q.claim("w", LEASE).await.unwrap().is_none(),
        "retried before its time"
    );

    q.enqueue(new_job(None)).await.unwrap();
    let other = q.claim("w", LEASE).await.unwrap().unwrap();
    assert!(q.finish(other.id, "w", Finish::Release).await.unwrap());
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
        q.heartbeat(running.id, "w", LEASE, 1).await.unwrap(),
        Heartbeat::Held {
            cancel_requested: true
        }
    );
    assert!(q.finish(running.id, "w", Finish::Canceled).await.unwrap());
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
    q.finish(running.id, "w", Finish::Succeeded(json!({})))
        .await
        .unwrap();
    let delivery = q.claim_webhook(LEASE).await.unwrap().unwrap();
    assert_eq!(delivery.job_id, running.id);
    assert_eq!(delivery.attempts, 1);
    assert!(
        q.claim_webhook(LEASE).await.unwrap().is_none(),
        "leased twice"
    );
    q.finish_webhook(delivery.id, DeliveryOutcome::Delivered)
        .await
        .unwrap();
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
        })
        .await
        .unwrap();
    assert_eq!(next.len(), 3);
    let counts = q.status_counts().await.unwrap();
    assert!(counts.contains(&(JobStatus::Queued, 5)));
}
