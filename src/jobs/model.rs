//! Jobs as the queue keeps them, and the wire view the API returns.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::clock::rfc3339;
use crate::media::probe::Probe;
use crate::media::transcode::{Output, Skipped};
use crate::overlay::TagOutput;
use crate::thumbnail::StillOutput;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled
        )
    }
}

/// Why a job failed: a stable machine-readable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobErrorInfo {
    pub code: super::error::ErrorCode,
    pub message: String,
}

/// A job row. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub spec: Value,
    pub status: JobStatus,
    pub progress: u8,
    pub attempts: u32,
    pub max_attempts: u32,
    pub error: Option<JobErrorInfo>,
    pub result: Option<Value>,
    pub callback_url: Option<String>,
    pub cancel_requested: bool,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub run_after: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The node running the job, or that ran its last attempt.
    pub node: Option<String>,
    /// Whose job it is (`shop:42`), if anyone's.
    pub owner: Option<String>,
}

/// What a succeeded job made: the job view's `result`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobResult {
    /// The input's streams, when the job probed, transcoded or took stills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// Every published file: renditions, HLS, tag tracks, stills; present
    /// when the job asked for renditions or stills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<JobOutput>>,
    /// Rungs of the ladder not made, and why (e.g. above the input's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Vec<Skipped>>,
    /// Where the poster was taken, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poster_time_s: Option<f64>,
    /// What a sandbox escape attempt of the test suite saw.
    #[cfg(feature = "test-support")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub escape: Option<serde_json::Map<String, Value>>,
}

/// One entry of `result.outputs`, told apart by its `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum JobOutput {
    Media(Output),
    Still(StillOutput),
    Tags(TagOutput),
}

/// What the API shows of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub status: JobStatus,
    /// 0-100, following the media pipeline's position.
    pub progress: u8,
    /// Runs started so far (a job reclaimed after a crash or retried after a
    /// transient error runs again).
    pub attempts: u32,
    pub max_attempts: u32,
    /// Set when the job failed, and while a retry is pending after a transient error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobErrorInfo>,
    /// Set when the job succeeded. Kept as the job store holds it, so a
    /// result written by an older node is shown as it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<JobResult>)]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub cancel_requested: bool,
    /// The job as submitted.
    pub spec: Value,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The node running the job, or that ran its last attempt (`node_id` in
    /// its settings). Absent until the job first runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Whose job it is (`shop:42`); absent for nobody's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        JobView {
            id: job.id,
            status: job.status,
            progress: job.progress,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            error: job.error.clone(),
            result: job.result.clone(),
            cancel_requested: job.cancel_requested && !job.status.is_terminal(),
            spec: job.spec.clone(),
            created_at: rfc3339(job.created_at),
            updated_at: rfc3339(job.updated_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
            node: job.node.clone(),
            owner: job.owner.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for st in JobStatus::ALL {
            assert_eq!(JobStatus::parse(st.as_str()), Some(st));
            assert_eq!(
                serde_json::to_value(st).unwrap(),
                Value::String(st.as_str().into())
            );
        }
        assert_eq!(JobStatus::parse("done"), None);
    }
}
