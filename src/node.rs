//! Wiring: opens the job store and object store, starts the workers, the webhook
//! deliverer and the HTTP server, and shuts them down in order.
//!
//! Shutdown (SIGTERM/SIGINT): readiness turns 503 and workers stop claiming; running
//! jobs get `jobs.shutdown_grace_ms` to finish; whatever still runs then is stopped
//! and handed back to the queue; finally the HTTP server stops.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, AppState, auth};
use crate::config::Config;
use crate::jobs::queue::{self as job_queue, DynQueue, Wakeups};
use crate::jobs::webhook;
use crate::jobs::worker::{WorkerDeps, WorkerPool};
use crate::live::ingest::{RtmpGate, SrtGateway};
use crate::live::metrics::LiveMetrics;
use crate::live::registry;
use crate::live::rtmp;
use crate::live::service::{LiveDeps, LiveService};
use crate::live::spool::Spool;
use crate::live::srt::{SrtServer, SrtSettings};
use crate::live::throttle::Throttle;
use crate::live::worker::WorkerConfig;
use crate::media;
use crate::metrics::Metrics;
use crate::presets::Presets;
use crate::store::{self, DynStore};

const API_TOKEN_FILE: &str = "api_token";
const WEBHOOK_SECRET_FILE: &str = "webhook_secret";
/// After the workers are done, how long in-flight HTTP requests may take.
const HTTP_DRAIN: Duration = Duration::from_secs(5);
/// After running jobs were told to stop, how long they may take to hand back.
const ABORT_DRAIN: Duration = Duration::from_secs(15);

/// On shutdown, how long live relays may take to store what they hold.
const LIVE_DRAIN: Duration = Duration::from_secs(5);

/// The live relay, running.
struct Live {
    service: Arc<LiveService>,
    rtmp_addr: std::net::SocketAddr,
    rtmp_base: String,
    srt_addr: std::net::SocketAddr,
    srt_base: String,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

/// Opens the stream registry and the spool, resumes streams an earlier run
/// left, and starts the RTMP and SRT servers (one wrong-key throttle for both).
async fn start_live(
    config: &Config,
    presets: &Arc<Presets>,
    store: &DynStore,
    metrics: &Metrics,
) -> anyhow::Result<Live> {
    let registry = registry::open(&config.db_url())
        .await
        .context("opening the live stream registry")?;
    let spool_dir = config.data_dir.join("live").join("spool");
    let spool = Spool::open(&spool_dir, config.live.spool_max_bytes)
        .with_context(|| format!("opening the live spool {}", spool_dir.display()))?;
    let service = LiveService::new(LiveDeps {
        registry,
        store: store.clone(),
        presets: presets.clone(),
        metrics: LiveMetrics::register(metrics),
        spool: Arc::new(spool),
        node_id: config.node_id(),
        lease: config.live.lease(),
        max_transcodes: config.live.max_transcodes,
        worker: WorkerConfig {
            memory_limit_mb: config.jobs.child_memory_limit_mb,
            log: config.log.clone(),
        },
    });
    service
        .recover()
        .await
        .context("resuming live streams from the spool")?;
    let listener = TcpListener::bind(config.rtmp_listen)
        .await
        .with_context(|| format!("binding the RTMP ingest to {}", config.rtmp_listen))?;
    let rtmp_addr = listener.local_addr()?;
    let rtmp_base = format!("rtmp://{}:{}/live/", config.ingest_host(), rtmp_addr.port());
    let srt_server = SrtServer::bind(config.srt_listen)
        .await
        .with_context(|| format!("binding the SRT ingest to {}", config.srt_listen))?;
    let srt_addr = srt_server.local_addr();
    let srt_base = format!(
        "srt://{}:{}?streamid=",
        config.ingest_host(),
        srt_addr.port()
    );
    let throttle = Arc::new(std::sync::Mutex::new(Throttle::new()));
    let stop = CancellationToken::new();
    // Any node ends streams whose node is gone (and writes their replays).
    service.spawn_sweeper(stop.clone());
    let settings = rtmp::RtmpSettings {
        max_connections: config.live.max_connections,
        // A held publisher waits up to one lease for another node's.
        gate_timeout: config.live.lease() + std::time::Duration::from_secs(5),
        trusted_proxies: config.live.proxy_protocol_from.0.clone(),
        ..Default::default()
    };
    let rtmp = tokio::spawn(rtmp::serve(
        listener,
        Arc::new(RtmpGate(service.clone())),
        throttle.clone(),
        settings,
        stop.clone(),
    ));
    let srt_settings = SrtSettings {
        max_connections: config.live.max_connections,
        ..Default::default()
    };
    let srt = tokio::spawn(srt_server.run(
        Arc::new(SrtGateway(service.clone())),
        throttle,
        srt_settings,
        stop.clone(),
    ));
    let server = tokio::spawn(async move {
        let _ = tokio::join!(rtmp, srt);
    });
    Ok(Live {
        service,
        rtmp_addr,
        rtmp_base,
        srt_addr,
        srt_base,
        stop,
        server,
    })
}

/// Reads a secret kept in the data dir, or creates it (mode 0600) with `generate`.
/// Returns the secret and whether it was just created.
pub fn secret_file(
    path: &Path,
    generate: impl FnOnce() -> String,
) -> std::io::Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok((s.trim().to_string(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let value = generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(value.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok((value, true))
}

/// Every GStreamer element the node and its presets need.
pub fn required_elements(presets: &Presets) -> Vec<&'static str> {
    let mut all: Vec<&'static str> = media::REQUIRED_ELEMENTS.to_vec();
    all.extend(presets.required_elements());
    all.sort_unstable();
    all.dedup();
    all
}

/// The stores a node works against.
pub struct Backends {
    pub queue: DynQueue,
    pub store: DynStore,
}

pub async fn open_backends(config: &Config) -> anyhow::Result<Backends> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let queue = job_queue::open(&config.db_url())
        .await
        .context("opening the job store")?;
    let store = store::open(config)
        .await
        .context("opening the object store")?;
    Ok(Backends { queue, store })
}

/// Runs the node on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut config = config;
    if config.public_url.is_none() {
        // The documented default, with the port the OS gave (listen port 0).
        config.public_url = Some(format!("http://{}", listener.local_addr()?));
    }
    let config = Arc::new(config);
    media::init().context("initialising GStreamer")?;
    let presets =
        Arc::new(Presets::load(config.pipelines_dir.as_deref()).context("loading presets")?);
    let missing = media::missing_elements(&required_elements(&presets));
    if !missing.is_empty() {
        warn!(missing = ?missing, "GStreamer elements are missing; /readyz will fail");
    }
    let Backends { queue, store } = open_backends(&config).await?;

    let mut tokens: Vec<String> = config
        .api_token
        .iter()
        .map(|t| t.expose().to_string())
        .collect();
    if tokens.is_empty() && config.auth.tokens.is_empty() {
        let path = config.data_dir.join(API_TOKEN_FILE);
        let (token, created) = secret_file(&path, crate::config::secret::generate_token)
            .with_context(|| format!("reading or creating {}", path.display()))?;
        if created {
            println!(
                "media-node: generated an API token (kept in {}): {token}",
                path.display()
            );
        } else {
            info!(file = %path.display(), "using the API token kept in the data dir");
        }
        tokens.push(token);
    }
    let webhook_secret = match &config.webhooks.secret {
        Some(secret) => secret.expose().to_string(),
        None => {
            let path = config.data_dir.join(WEBHOOK_SECRET_FILE);
            let (secret, created) =
                secret_file(&path, crate::config::secret::generate_webhook_secret)
                    .with_context(|| format!("reading or creating {}", path.display()))?;
            if created {
                println!(
                    "media-node: generated a webhook signing secret (kept in {})",
                    path.display()
                );
            }
            secret
        }
    };

    let metrics = Arc::new(Metrics::new());
    let live = start_live(&config, &presets, &store, &metrics).await?;
    let wake = Wakeups::default();
    let wake_workers = wake.jobs.clone();
    let draining = Arc::new(AtomicBool::new(false));
    let mut pool = WorkerPool::start(WorkerDeps {
        queue: queue.clone(),
        store: store.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
        wake: wake.clone(),
        node_id: config.node_id(),
        presets: presets.clone(),
    });
    let background_stop = CancellationToken::new();
    let deliverer =
        webhook::Deliverer::new(queue.clone(), &webhook_secret, config.webhooks.clone())
            .map_err(|e| anyhow::anyhow!("webhook deliverer: {e}"))?
            .spawn(wake.webhooks.clone(), background_stop.clone());
    let relay = tokio::spawn({
        let (queue, stop) = (queue.clone(), background_stop.clone());
        async move { queue.relay_wakeups(wake, stop).await }
    });

    let state = AppState {
        config: config.clone(),
        queue,
        store,
        metrics,
        wake_workers,
        credentials: Arc::new(auth::credentials(&tokens, &config.auth.tokens)),
        draining: draining.clone(),
        missing_elements: Arc::new(missing),
        presets,
        live: live.service.clone(),
        ingest: Arc::new(api::Ingest {
            rtmp_base: live.rtmp_base.clone(),
            srt_base: live.srt_base.clone(),
        }),
    };
    let addr = listener.local_addr()?;
    let http_stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = http_stop.clone();
        let app = api::router(state);
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });
    info!(%addr, store = config.store_kind_name(), "media-node serving");
    info!(rtmp = %live.rtmp_addr, srt = %live.srt_addr, "live ingest listening");
    println!("media-node listening on http://{addr}");
    let _ = std::io::stdout().flush();

    shutdown.await;
    info!("shutting down: no new jobs or publishers; running jobs may finish");
    draining.store(true, Ordering::SeqCst);
    pool.stop_claiming();
    // Publishers reconnect to the restarted node; what the relays cannot store
    // in time stays in the spool for the next start.
    live.stop.cancel();
    let _ = tokio::time::timeout(LIVE_DRAIN, live.server).await;
    live.service.shutdown(LIVE_DRAIN).await;
    let grace = Duration::from_millis(config.jobs.shutdown_grace_ms);
    if !pool.join(grace).await {
        warn!("grace period over; stopping running jobs and handing them back");
        pool.abort_running();
        if !pool.join(ABORT_DRAIN).await {
            warn!("some jobs did not stop; their leases will expire");
        }
    }
    background_stop.cancel();
    let _ = deliverer.await;
    let _ = relay.await;
    http_stop.cancel();
    match tokio::time::timeout(HTTP_DRAIN, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "HTTP server ended with an error"),
        Ok(Err(e)) => warn!(error = %e, "HTTP server task failed"),
        Err(_) => warn!("HTTP requests still open after the drain period"),
    }
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let (first, created) = secret_file(&path, crate::config::secret::generate_token).unwrap();
        assert!(created);
        assert!(first.len() >= 40);
        let (again, created) = secret_file(&path, || unreachable!()).unwrap();
        assert!(!created);
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
