//! Node configuration: one struct per subsystem, layered from built-in defaults, an
//! optional TOML file and `MEDIA_NODE_*` environment variables, validated once at start.
//!
//! Settings are plain data: nothing here holds runtime state. Every setting that is a
//! duration or a size carries its unit in its name (`lease_ms`, `max_upload_bytes`).
//! The full reference with every environment variable lives in `docs/configuration.md`.

pub mod auth;
mod env;
pub mod media;
pub mod secret;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use auth::{AuthConfig, Role, TokenEntry};
pub use media::{CorsOrigins, MediaConfig};
pub use secret::{Secret, Secrets};

/// Where the job store lives when `db.url` is not set: a SQLite file in the data dir.
const DEFAULT_SQLITE_FILE: &str = "jobs.db";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting is missing, malformed or not acceptable. `env` names the variable
    /// that sets it, so the message says what to fix wherever the value came from.
    #[error("invalid setting `{setting}` ({env}): {reason}")]
    Invalid {
        setting: String,
        env: String,
        reason: String,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        let setting = if err.path.is_empty() {
            // Unknown field at the top level: figment puts the name in the message.
            match &err.kind {
                figment::error::Kind::UnknownField(name, _) => name.clone(),
                _ => "(file)".to_string(),
            }
        } else {
            let mut path = err.path.join(".");
            if let figment::error::Kind::UnknownField(name, _) = &err.kind
                && err.path.last() != Some(name)
            {
                path = format!("{path}.{name}");
            }
            path
        };
        let source = match &err.metadata {
            Some(md) => format!(" (from {})", md.name),
            None => String::new(),
        };
        ConfigError::Invalid {
            env: env::variable_for(&setting),
            setting,
            reason: format!("{}{source}", err.kind),
        }
    }
}

fn invalid(setting: &str, env: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_string(),
        env: env.to_string(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP API (and `/media` when the store is `fs`).
    pub listen: SocketAddr,
    /// Base URL clients use to reach this node; used for links in API answers.
    /// Default: `http://{listen}`.
    pub public_url: Option<String>,
    /// Root of everything the node keeps on local disk: SQLite job store, filesystem
    /// object store, per-job work dirs, generated secrets.
    pub data_dir: PathBuf,
    /// This node's name in a fleet: job and stream views name the node running
    /// them, and leases are held in its name. Letters, digits, `.`, `_` and
    /// `-`, at most 64. Default: the host name and a hash of the data dir, so
    /// it stays the same across restarts and differs between two nodes on one
    /// host.
    pub node_id: Option<String>,
    /// Admin bearer tokens accepted on `/v1`. Empty, and no `auth.tokens`:
    /// one is generated on first start and kept in `{data_dir}/api_token`.
    pub api_token: Secrets,
    /// Scoped tokens: a name, a role and optionally an owner each.
    pub auth: AuthConfig,
    /// Object store backend.
    pub store: StoreKind,
    /// A folder laid out like the repository's `pipelines/` whose presets add to or
    /// replace the built-in ones. Unset: built-in presets only.
    pub pipelines_dir: Option<PathBuf>,
    /// Font files (TTF/OTF) for shoppable-tag text in scripts the shipped Noto
    /// Sans subset lacks (it covers Latin, Greek and Cyrillic), e.g. a CJK font.
    /// Tried in order after it. In the environment: paths separated by `:`.
    pub tag_fonts: FontFiles,
    /// Address of the RTMP ingest (`rtmp://HOST:PORT/live/<stream key>`). The
    /// default only takes local publishers; set `0.0.0.0:1935` in production.
    pub rtmp_listen: SocketAddr,
    /// UDP address of the SRT ingest (`srt://HOST:PORT?streamid=<stream key>`,
    /// MPEG-TS). Local only by default, like the API.
    pub srt_listen: SocketAddr,
    pub live: LiveConfig,
    pub media: MediaConfig,
    pub s3: S3Config,
    pub db: DbConfig,
    pub jobs: JobsConfig,
    pub limits: LimitsConfig,
    pub webhooks: WebhookConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            data_dir: PathBuf::from("./data"),
            node_id: None,
            api_token: Secrets::default(),
            auth: AuthConfig::default(),
            store: StoreKind::Fs,
            pipelines_dir: None,
            tag_fonts: FontFiles::default(),
            rtmp_listen: SocketAddr::from(([127, 0, 0, 1], 1935)),
            srt_listen: SocketAddr::from(([127, 0, 0, 1], 8890)),
            live: LiveConfig::default(),
            media: MediaConfig::default(),
            s3: S3Config::default(),
            db: DbConfig::default(),
            jobs: JobsConfig::default(),
            limits: LimitsConfig::default(),
            webhooks: WebhookConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// A list of font files: a TOML array, or one string of paths separated by `:`
/// (how it comes from an environment variable).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FontFiles(pub Vec<PathBuf>);

impl<'de> Deserialize<'de> for FontFiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<PathBuf>),
            Joined(String),
        }
        Ok(FontFiles(match Form::deserialize(d)? {
            Form::List(list) => list,
            Form::Joined(text) => text
                .split(':')
                .filter(|p| !p.trim().is_empty())
                .map(|p| PathBuf::from(p.trim()))
                .collect(),
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Files below `{data_dir}/objects`, served read-only at `/media`.
    Fs,
    /// Any S3-compatible object store.
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: Option<String>,
    /// Custom endpoint (MinIO, Garage, Ceph, s3s...). Unset: AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`); most non-AWS stores need it.
    pub path_style: bool,
    /// Optional prefix below which every key of this node is stored.
    pub prefix: Option<String>,
    /// Static credentials. Unset (the usual case): the standard AWS chain
    /// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, instance roles...).
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// Server-side encryption requested on every write: `AES256`, `aws:kms`, or `none`
    /// for stores that refuse the header.
    pub sse: SseMode,
    /// When the SDK computes request checksums. `auto`: `when_supported` on AWS,
    /// `when_required` on custom endpoints (several S3-compatible stores reject the
    /// streaming checksum trailers that `when_supported` sends).
    pub checksum: ChecksumMode,
    /// Objects at or above this size are sent as a multipart upload.
    pub multipart_threshold_bytes: u64,
    pub part_size_bytes: u64,
    /// Parts of one multipart upload sent at once.
    pub part_concurrency: usize,
    pub connect_timeout_ms: u64,
    /// Deadline of one attempt of one request (a part, a small object).
    pub operation_timeout_ms: u64,
    /// Attempts per request, including the first (SDK standard retry with backoff).
    pub max_attempts: u32,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: None,
            endpoint: None,
            region: "us-east-1".into(),
            path_style: false,
            prefix: None,
            access_key_id: None,
            secret_access_key: None,
            sse: SseMode::Aes256,
            checksum: ChecksumMode::Auto,
            multipart_threshold_bytes: 16 * 1024 * 1024,
            part_size_bytes: 8 * 1024 * 1024,
            part_concurrency: 4,
            connect_timeout_ms: 3_000,
            // Large enough for an 8 MiB part over a slow link, small enough that a
            // hung store does not hold a worker for minutes.
            operation_timeout_ms: 60_000,
            max_attempts: 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SseMode {
    #[serde(rename = "AES256", alias = "aes256")]
    Aes256,
    #[serde(rename = "aws:kms")]
    AwsKms,
    #[serde(rename = "none")]
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    Auto,
    WhenSupported,
    WhenRequired,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Bytes of closed segments the spool (`{data_dir}/live/spool`) may hold
    /// while the object store is slow or down. A segment that would pass it is
    /// dropped (counted in `media_node_live_segments_dropped_total`), never one
    /// already spooled.
    pub spool_max_bytes: u64,
    /// Host name put in the ingest URLs the API hands out. Default: the host of
    /// `public_url`, else the RTMP listen address.
    pub ingest_host: Option<String>,
    /// Base URL players read live and replay playlists from (a CDN in front of
    /// the bucket). Default with the `fs` store: `{public_url}/media/`.
    pub playback_base_url: Option<String>,
    /// Publisher connections open at once (each holds a socket and buffers).
    pub max_connections: usize,
    /// Streams whose profile transcodes that this node encodes renditions of
    /// at once (each costs about half a core for a 720p source and the built-in
    /// 480p and 240p rungs, measured with `benches/live.sh --profile ladder`). Further such streams are relayed as the source alone.
    /// Default: half the CPUs, at least 1. 0: never transcode.
    pub max_transcodes: usize,
    /// How long a live stream stays this node's without a renewal (renewed
    /// every third of it). When a node dies, its publishers are back on air on
    /// another node within about this long, and its orphaned streams are
    /// ended after this plus their reconnect window.
    pub lease_ms: u64,
    /// Addresses or networks (`10.0.0.0/24`) of the layer-4 balancers in
    /// front of the RTMP listener that send a PROXY protocol header (v1 or
    /// v2) with each connection; the creator's address from it is what the
    /// wrong-key throttle and the logs see. A header from any other address
    /// is refused. In the environment: comma-separated.
    pub proxy_protocol_from: NetList,
}

/// A list of IP networks: a TOML array, or one comma-separated string (how
/// it comes from an environment variable). A bare address is a /32 or /128.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetList(pub Vec<ipnet::IpNet>);

impl Serialize for NetList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|n| n.to_string()))
    }
}

/// A list setting: a TOML array, or one comma-separated string (how it comes
/// from an environment variable).
pub(crate) fn list_or_joined<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        List(Vec<String>),
        Joined(String),
    }
    Ok(match Form::deserialize(d)? {
        Form::List(list) => list,
        Form::Joined(text) => text.split(',').map(str::to_string).collect(),
    })
}

impl<'de> Deserialize<'de> for NetList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = list_or_joined(d)?;
        let mut nets = Vec::new();
        for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
            let net = match item.parse::<ipnet::IpNet>() {
                Ok(net) => net,
                Err(_) => item
                    .parse::<std::net::IpAddr>()
                    .map(ipnet::IpNet::from)
                    .map_err(|_| {
                        serde::de::Error::custom(format!("`{item}` is not an address or a network"))
                    })?,
            };
            nets.push(net);
        }
        Ok(NetList(nets))
    }
}

impl LiveConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            spool_max_bytes: 2 * 1024 * 1024 * 1024,
            ingest_host: None,
            playback_base_url: None,
            max_connections: 256,
            max_transcodes: (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2)
                .max(1),
            lease_ms: 10_000,
            proxy_protocol_from: NetList::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DbConfig {
    /// `sqlite://path` (default: `{data_dir}/jobs.db`; one node) or
    /// `postgres://user:password@host:port/db` (every node of a fleet on one
    /// database).
    pub url: Option<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Jobs run at once on this node. 0: number of cores.
    pub workers: usize,
    /// How long a claimed job stays ours without a heartbeat. After a crash, the job
    /// runs again on any node once this has passed.
    pub lease_ms: u64,
    /// Heartbeat period; must be well under `lease_ms`.
    pub heartbeat_ms: u64,
    /// How often an idle worker looks for work queued by other nodes (jobs queued on
    /// this node wake the workers at once).
    pub poll_ms: u64,
    /// Runs of one job, including the first; transient failures retry up to this.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Hard deadline for one run of one job.
    pub timeout_ms: u64,
    /// Address space of a job's media process, MiB; 0: unlimited. The run
    /// fails `memory_limit` when it reaches it. A 1080p ladder peaks at about
    /// 2.5 GiB (address space counts reservations and thread stacks); the
    /// default leaves room for the largest allowed input.
    pub child_memory_limit_mb: u64,
    /// On SIGTERM, how long running jobs may take to finish before they are stopped
    /// and handed back to the queue.
    pub shutdown_grace_ms: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            workers: 0,
            lease_ms: 30_000,
            heartbeat_ms: 5_000,
            poll_ms: 1_000,
            max_attempts: 3,
            retry_base_ms: 2_000,
            retry_max_ms: 60_000,
            timeout_ms: 30 * 60 * 1000,
            child_memory_limit_mb: 8192,
            shutdown_grace_ms: 30_000,
        }
    }
}

impl JobsConfig {
    pub fn worker_count(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.workers
        }
    }
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest body accepted by `PUT /v1/objects/{key}`.
    pub max_upload_bytes: u64,
    /// Largest JSON body accepted by the API.
    pub max_json_bytes: usize,
    /// Largest input object a job will read.
    pub max_input_bytes: u64,
    /// Deadline for probing one input.
    pub probe_timeout_ms: u64,
    /// Longest input a transcode accepts.
    pub max_duration_s: f64,
    /// Largest picture (width × height) a transcode accepts.
    pub max_pixels: u64,
    /// Highest input frame rate a transcode accepts.
    pub max_fps: f64,
    /// Largest photo (width × height, read from its header) a job decodes.
    pub max_image_pixels: u64,
    /// Largest photo file a job reads.
    pub max_image_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_upload_bytes: 2 * 1024 * 1024 * 1024,
            max_json_bytes: 256 * 1024,
            max_input_bytes: 2 * 1024 * 1024 * 1024,
            probe_timeout_ms: 20_000,
            // Product videos and replays are short; an hour bounds the work one
            // upload can cause.
            max_duration_s: 3600.0,
            // 8K UHD.
            max_pixels: 7680 * 4320,
            max_fps: 240.0,
            // 100 MP: every phone camera, and no decompression bomb.
            max_image_pixels: 100_000_000,
            max_image_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Signing secret, `whsec_<base64>` as in the Standard Webhooks spec. Empty: one
    /// is generated on first start and kept in `{data_dir}/webhook_secret`.
    pub secret: Option<Secret>,
    /// Allow callbacks to loopback, private and link-local addresses (tests, labs).
    pub allow_private: bool,
    pub timeout_ms: u64,
    /// Deliveries of one event, including the first.
    pub max_attempts: u32,
    /// First retry delay; grows fivefold per attempt up to one hour.
    pub retry_base_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            secret: None,
            allow_private: false,
            timeout_ms: 10_000,
            max_attempts: 8,
            retry_base_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` filter directives, e.g. `info,media_node=debug`. `RUST_LOG` wins.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

impl Config {
    /// Defaults, then `file` (TOML) when given, then `MEDIA_NODE_*` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, env::provider())
    }

    fn load_from(file: Option<&Path>, env: impl figment::Provider) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(invalid(
                    "--config",
                    "MEDIA_NODE_CONFIG",
                    format!("file {} does not exist", file.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let mut config: Config = figment.merge(env).extract()?;
        config.validate()?;
        // Paths handed to GStreamer (file:// URIs) must be absolute; resolve the data
        // dir once against the directory the node was started in.
        config.data_dir = std::path::absolute(&config.data_dir)
            .map_err(|e| invalid("data_dir", "MEDIA_NODE_DATA_DIR", e.to_string()))?;
        Ok(config)
    }

    /// `node_id`, or the host name and a hash of the data dir.
    pub fn node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        use sha2::Digest;
        let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            .take(47)
            .collect();
        let host = if host.is_empty() { "node".into() } else { host };
        let digest = sha2::Sha256::digest(self.data_dir.as_os_str().as_encoded_bytes());
        format!("{host}-{}", hex::encode(&digest[..4]))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid(
                "data_dir",
                "MEDIA_NODE_DATA_DIR",
                "must not be empty",
            ));
        }
        if self.live.lease_ms < 2_000 {
            return Err(invalid(
                "live.lease_ms",
                "MEDIA_NODE_LIVE_LEASE_MS",
                "must be at least 2000",
            ));
        }
        if let Some(id) = &self.node_id {
            let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if id.is_empty() || id.len() > 64 || !id.chars().all(allowed) {
                return Err(invalid(
                    "node_id",
                    "MEDIA_NODE_NODE_ID",
                    "letters, digits, `.`, `_` and `-`, 1 to 64 of them",
                ));
            }
        }
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| invalid("public_url", "MEDIA_NODE_PUBLIC_URL", e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(
                    "public_url",
                    "MEDIA_NODE_PUBLIC_URL",
                    "must be an http or https URL",
                ));
            }
        }
        self.auth
            .validate()
            .map_err(|e| invalid("auth.tokens", "MEDIA_NODE_AUTH_TOKENS", e))?;
        for token in self.api_token.iter() {
            if token.expose().len() < 16 {
                return Err(invalid(
                    "api_token",
                    "MEDIA_NODE_API_TOKEN",
                    "each token must be at least 16 characters",
                ));
            }
        }
        if self.store == StoreKind::S3 {
            match &self.s3.bucket {
                Some(b) if !b.trim().is_empty() => {}
                _ => {
                    return Err(invalid(
                        "s3.bucket",
                        "MEDIA_NODE_S3_BUCKET",
                        "required when store = \"s3\"",
                    ));
                }
            }
            if let Some(endpoint) = &self.s3.endpoint {
                url::Url::parse(endpoint)
                    .map_err(|e| invalid("s3.endpoint", "MEDIA_NODE_S3_ENDPOINT", e.to_string()))?;
            }
            if self.s3.access_key_id.is_some() != self.s3.secret_access_key.is_some() {
                return Err(invalid(
                    "s3.access_key_id / s3.secret_access_key",
                    "MEDIA_NODE_S3_ACCESS_KEY_ID / MEDIA_NODE_S3_SECRET_ACCESS_KEY",
                    "set both or neither",
                ));
            }
            if self.s3.part_size_bytes < 5 * 1024 * 1024 {
                return Err(invalid(
                    "s3.part_size_bytes",
                    "MEDIA_NODE_S3_PART_SIZE_BYTES",
                    "S3 parts must be at least 5 MiB",
                ));
            }
            if self.s3.multipart_threshold_bytes < self.s3.part_size_bytes {
                return Err(invalid(
                    "s3.multipart_threshold_bytes",
                    "MEDIA_NODE_S3_MULTIPART_THRESHOLD_BYTES",
                    "must be at least s3.part_size_bytes",
                ));
            }
            if self.s3.part_concurrency == 0 || self.s3.max_attempts == 0 {
                return Err(invalid(
                    "s3.part_concurrency / s3.max_attempts",
                    "MEDIA_NODE_S3_PART_CONCURRENCY / MEDIA_NODE_S3_MAX_ATTEMPTS",
                    "must be at least 1",
                ));
            }
        }
        if let Some(url) = &self.db.url
            && !url.expose().starts_with("sqlite:")
            && !crate::db::is_postgres(url.expose())
        {
            return Err(invalid(
                "db.url",
                "MEDIA_NODE_DB_URL",
                "must be a sqlite:// or postgres:// URL",
            ));
        }
        let jobs = &self.jobs;
        if jobs.heartbeat_ms == 0 || jobs.heartbeat_ms * 2 > jobs.lease_ms {
            return Err(invalid(
                "jobs.heartbeat_ms",
                "MEDIA_NODE_JOBS_HEARTBEAT_MS",
                format!(
                    "must be above 0 and at most half of jobs.lease_ms ({})",
                    jobs.lease_ms
                ),
            ));
        }
        if jobs.max_attempts == 0 {
            return Err(invalid(
                "jobs.max_attempts",
                "MEDIA_NODE_JOBS_MAX_ATTEMPTS",
                "must be at least 1",
            ));
        }
        if jobs.poll_ms == 0 || jobs.timeout_ms == 0 {
            return Err(invalid(
                "jobs.poll_ms / jobs.timeout_ms",
                "MEDIA_NODE_JOBS_POLL_MS / MEDIA_NODE_JOBS_TIMEOUT_MS",
                "must be above 0",
            ));
        }
        if !(self.limits.max_duration_s > 0.0 && self.limits.max_fps > 0.0)
            || self.limits.max_pixels == 0
        {
            return Err(invalid(
                "limits.max_duration_s / max_pixels / max_fps",
                "MEDIA_NODE_LIMITS_MAX_DURATION_S / _MAX_PIXELS / _MAX_FPS",
                "must be above 0",
            ));
        }
        if self.limits.max_json_bytes < 1024 {
            return Err(invalid(
                "limits.max_json_bytes",
                "MEDIA_NODE_LIMITS_MAX_JSON_BYTES",
                "must be at least 1024",
            ));
        }
        if let Some(secret) = &self.webhooks.secret {
            secret::decode_webhook_secret(secret.expose()).map_err(|reason| {
                invalid("webhooks.secret", "MEDIA_NODE_WEBHOOK_SECRET", reason)
            })?;
        }
        if self.live.spool_max_bytes < 16 * 1024 * 1024 || self.live.max_connections == 0 {
            return Err(invalid(
                "live.spool_max_bytes / live.max_connections",
                "MEDIA_NODE_LIVE_SPOOL_MAX_BYTES / MEDIA_NODE_LIVE_MAX_CONNECTIONS",
                "the spool needs at least 16 MiB and at least one connection",
            ));
        }
        if let Some(base) = &self.live.playback_base_url {
            url::Url::parse(base).map_err(|e| {
                invalid(
                    "live.playback_base_url",
                    "MEDIA_NODE_LIVE_PLAYBACK_BASE_URL",
                    e.to_string(),
                )
            })?;
        }
        if self.webhooks.max_attempts == 0 {
            return Err(invalid(
                "webhooks.max_attempts",
                "MEDIA_NODE_WEBHOOK_MAX_ATTEMPTS",
                "must be at least 1",
            ));
        }
        crate::overlay::text::Fonts::new(&self.tag_fonts.0)
            .map_err(|e| invalid("tag_fonts", "MEDIA_NODE_TAG_FONTS", e.to_string()))?;
        tracing_subscriber::EnvFilter::try_new(&self.log.filter)
            .map_err(|e| invalid("log.filter", "MEDIA_NODE_LOG_FILTER", e.to_string()))?;
        Ok(())
    }

    /// The base URL of this node's HTTP API as clients reach it.
    pub fn public_base(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }

    /// The host publishers are told to connect to.
    pub fn ingest_host(&self) -> String {
        if let Some(host) = &self.live.ingest_host {
            return host.clone();
        }
        if let Some(host) = self
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_string))
        {
            return host;
        }
        let ip = self.rtmp_listen.ip();
        if ip.is_unspecified() {
            "localhost".into()
        } else if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        }
    }

    /// Where players find an object of the store, if anywhere.
    pub fn playback_url(&self, key: &str) -> Option<String> {
        match (&self.live.playback_base_url, self.store) {
            (Some(base), _) => Some(format!("{}/{key}", base.trim_end_matches('/'))),
            (None, StoreKind::Fs) => Some(format!("{}/media/{key}", self.public_base())),
            (None, StoreKind::S3) => None,
        }
    }

    /// The job store URL, defaulting to a SQLite file in the data dir.
    pub fn db_url(&self) -> String {
        match &self.db.url {
            Some(url) => url.expose().to_string(),
            None => format!(
                "sqlite://{}",
                self.data_dir.join(DEFAULT_SQLITE_FILE).display()
            ),
        }
    }

    pub fn store_kind_name(&self) -> &'static str {
        match self.store {
            StoreKind::Fs => "fs",
            StoreKind::S3 => "s3",
        }
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml_string(self)
    }
}

fn toml_string(config: &Config) -> String {
    // `Secret` serialises masked, so this never prints a secret.
    match toml::to_string_pretty(config) {
        Ok(s) => s,
        Err(e) => format!("# cannot render configuration: {e}\n"),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    fn load(jail: &mut Jail, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        jail.clear_env();
        for (k, v) in vars {
            jail.set_env(k, v);
        }
        Config::load(None)
    }

    #[test]
    fn balancers_are_addresses_or_networks() {
        Jail::expect_with(|jail| {
            let c = load(
                jail,
                &[(
                    "MEDIA_NODE_LIVE_PROXY_PROTOCOL_FROM",
                    "10.0.0.0/24, 127.0.0.1",
                )],
            )
            .unwrap();
            let nets: Vec<String> = c
                .live
                .proxy_protocol_from
                .0
                .iter()
                .map(|n| n.to_string())
                .collect();
            assert_eq!(nets, ["10.0.0.0/24", "127.0.0.1/32"]);
            assert!(
                load(
                    jail,
                    &[("MEDIA_NODE_LIVE_PROXY_PROTOCOL_FROM", "lb.internal")]
                )
                .is_err()
            );
            Ok(())
        });
    }

    #[test]
    fn node_id_is_stable_per_data_dir_and_configurable() {
        Jail::expect_with(|jail| {
            let a = load(jail, &[("MEDIA_NODE_DATA_DIR", "/srv/a")]).unwrap();
            let again = load(jail, &[("MEDIA_NODE_DATA_DIR", "/srv/a")]).unwrap();
            let b = load(jail, &[("MEDIA_NODE_DATA_DIR", "/srv/b")]).unwrap();
            assert_eq!(a.node_id(), again.node_id());
            assert_ne!(a.node_id(), b.node_id());
            assert!(!a.node_id().contains('/'), "{}", a.node_id());
            let named = load(jail, &[("MEDIA_NODE_NODE_ID", "edge-3.fra")]).unwrap();
            assert_eq!(named.node_id(), "edge-3.fra");
            let err = load(jail, &[("MEDIA_NODE_NODE_ID", "a/b")]).unwrap_err();
            assert!(err.to_string().contains("MEDIA_NODE_NODE_ID"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn defaults_are_the_embedded_node() {
        Jail::expect_with(|jail| {
            let c = load(jail, &[]).unwrap();
            assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
            assert_eq!(c.store, StoreKind::Fs);
            assert!(c.data_dir.is_absolute());
            assert!(c.data_dir.ends_with("data"));
            assert!(c.db_url().ends_with("data/jobs.db"));
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_file_and_maps_sections() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                "listen = \"0.0.0.0:9000\"\n[jobs]\nworkers = 3\n",
            )?;
            jail.clear_env();
            for (k, v) in [
                ("MEDIA_NODE_LISTEN", "127.0.0.1:0"),
                ("MEDIA_NODE_STORE", "s3"),
                ("MEDIA_NODE_S3_BUCKET", "media"),
                ("MEDIA_NODE_S3_PATH_STYLE", "true"),
                ("MEDIA_NODE_API_TOKEN", "aaaaaaaaaaaaaaaa,1234567890123456"),
                ("MEDIA_NODE_CONFIG", "node.toml"),
                ("MEDIA_NODE_LIVE_MAX_TRANSCODES", "7"),
            ] {
                jail.set_env(k, v);
            }
            let c = Config::load(Some(Path::new("node.toml"))).unwrap();
            assert_eq!(c.live.max_transcodes, 7);
            assert_eq!(c.listen.to_string(), "127.0.0.1:0");
            assert_eq!(c.jobs.workers, 3);
            assert_eq!(c.store, StoreKind::S3);
            assert_eq!(c.s3.bucket.as_deref(), Some("media"));
            assert!(c.s3.path_style);
            let tokens: Vec<_> = c.api_token.iter().map(|t| t.expose().to_string()).collect();
            assert_eq!(tokens, ["aaaaaaaaaaaaaaaa", "1234567890123456"]);
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_setting_and_variable() {
        Jail::expect_with(|jail| {
            let err = load(jail, &[("MEDIA_NODE_STORE", "s3")]).unwrap_err();
            assert!(err.to_string().contains("MEDIA_NODE_S3_BUCKET"), "{err}");

            let err = load(jail, &[("MEDIA_NODE_LISTEN", "nowhere")]).unwrap_err();
            assert!(err.to_string().contains("MEDIA_NODE_LISTEN"), "{err}");

            let err = load(jail, &[("MEDIA_NODE_STORE", "ftp")]).unwrap_err();
            assert!(err.to_string().contains("MEDIA_NODE_STORE"), "{err}");

            let err = load(jail, &[("MEDIA_NODE_JOBS_LEASE_MS", "soon")]).unwrap_err();
            assert!(
                err.to_string().contains("MEDIA_NODE_JOBS_LEASE_MS"),
                "{err}"
            );

            let err = load(jail, &[("MEDIA_NODE_API_TOKEN", "short")]).unwrap_err();
            assert!(err.to_string().contains("MEDIA_NODE_API_TOKEN"), "{err}");

            let err = load(jail, &[("MEDIA_NODE_LISTNE", "127.0.0.1:1")]).unwrap_err();
            assert!(err.to_string().contains("listne"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn masked_output_hides_secrets() {
        Jail::expect_with(|jail| {
            let c = load(jail, &[("MEDIA_NODE_API_TOKEN", "super-secret-token-123")]).unwrap();
            let shown = c.to_masked_toml();
            assert!(!shown.contains("super-secret-token-123"));
            assert!(shown.contains("****"));
            Ok(())
        });
    }
}
