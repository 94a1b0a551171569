//! The `media-node` command: `serve`, `check`, `config`, `token new`, ...

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use media_node::check::Verdict;
use media_node::config::{Config, LogFormat, Role};
use media_node::{node, telemetry};

#[derive(Parser)]
#[command(
    name = "media-node",
    version,
    about = "Media processing node: transcodes, thumbnails, shoppable tags and live relay"
)]
struct Cli {
    /// TOML configuration file (settings from MEDIA_NODE_* variables override it).
    #[arg(long, global = true, env = "MEDIA_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format; overrides `log.format`.
    #[arg(long, global = true, value_enum)]
    log_format: Option<CliLogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and the job workers.
    Serve,
    /// Verify the job store, the object store and the GStreamer elements; exit 1 if
    /// anything is missing.
    Check,
    /// Print the effective configuration (secrets masked).
    Config,
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Run one job on a local file without a server; print its result as JSON.
    Process {
        /// The input media file.
        input: PathBuf,
        /// The job as JSON (its `input` is replaced by INPUT).
        #[arg(long)]
        spec: PathBuf,
        /// Folder the outputs are written below (under their usual keys).
        #[arg(long)]
        out: PathBuf,
        /// Run the media work inside this process, unconfined (for the
        /// isolation benchmark only).
        #[arg(long, hide = true)]
        debug_in_process: bool,
    },
    /// The media step of one job, in a child of the node (internal).
    #[command(hide = true)]
    Work {
        /// The job this process works for (so `ps` shows it).
        #[arg(long)]
        job: uuid::Uuid,
        /// The job's work dir, holding its request.
        #[arg(long)]
        dir: PathBuf,
    },
    /// (internal) A live stream's media process: rendition encodes and
    /// poster decodes, confined; speaks to the node on stdin and stdout.
    #[command(hide = true)]
    WorkLive {
        /// The stream this process works for (so `ps` shows it).
        #[arg(long)]
        stream: uuid::Uuid,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new token: print it once, and the entry to configure (which
    /// holds only its SHA-256).
    New {
        /// Its name in logs and the audit trail.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: CliRole,
        /// Bind it to one owner (e.g. `shop:42`).
        #[arg(long)]
        owner: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CliRole {
    Admin,
    Jobs,
    Live,
    Read,
}

impl From<CliRole> for Role {
    fn from(role: CliRole) -> Role {
        match role {
            CliRole::Admin => Role::Admin,
            CliRole::Jobs => Role::Jobs,
            CliRole::Live => Role::Live,
            CliRole::Read => Role::Read,
        }
    }
}

/// `media-node token new`: the token on its own line, then the entry as TOML
/// (`[[auth.tokens]]`) and as JSON (`MEDIA_NODE_AUTH_TOKENS`).
fn token_new(name: &str, role: CliRole, owner: Option<&str>) -> ExitCode {
    let (token, entry) = match media_node::config::auth::new_token(name, role.into(), owner) {
        Ok(made) => made,
        Err(e) => {
            eprintln!("media-node: {e}");
            return ExitCode::from(2);
        }
    };
    let toml = toml::to_string(&entry).unwrap_or_default();
    let json = serde_json::to_string(&entry).unwrap_or_default();
    println!("token (shown once; give it to its holder): {token}");
    println!();
    println!("# in the configuration file:");
    println!("[[auth.tokens]]");
    print!("{toml}");
    println!();
    println!("# or an element of the MEDIA_NODE_AUTH_TOKENS array:");
    println!("{json}");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The child reads everything from its request, nothing from the
    // environment (which the node cleared).
    if let Command::Work { job, dir } = &cli.command {
        return media_node::jobs::runner::child::work_main(*job, dir);
    }
    if let Command::WorkLive { stream } = &cli.command {
        return media_node::live::worker::child::work_live_main(*stream);
    }
    if let Command::Token {
        action: TokenCommand::New { name, role, owner },
    } = &cli.command
    {
        return token_new(name, *role, owner.as_deref());
    }
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("media-node: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    if let Some(format) = cli.log_format {
        config.log.format = match format {
            CliLogFormat::Text => LogFormat::Text,
            CliLogFormat::Json => LogFormat::Json,
        };
    }
    match cli.command {
        Command::Config => {
            print!("{}", config.to_masked_toml());
            return ExitCode::SUCCESS;
        }
        Command::Openapi => {
            println!("{}", media_node::api::openapi::document_json());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    if matches!(cli.command, Command::Process { .. }) && config.log.filter == "info" {
        // A one-shot run shows its progress bar; only problems are logged.
        config.log.filter = "warn".into();
    }
    if matches!(cli.command, Command::Serve | Command::Check) {
        // Before any thread: this sets GST_REGISTRY for the node and its
        // media children.
        media_node::media::registry::use_node_cache(&config.data_dir);
    }
    telemetry::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("media-node")
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("media-node: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::Check => check(config).await,
            Command::Process {
                input,
                spec,
                out,
                debug_in_process,
            } => process(config, input, spec, out, debug_in_process).await,
            Command::Config
            | Command::Openapi
            | Command::Token { .. }
            | Command::Work { .. }
            | Command::WorkLive { .. } => {
                unreachable!("handled above")
            }
        }
    })
}

async fn serve(config: Config) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("media-node: cannot listen on {}: {err}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    match node::serve(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("media-node: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn process(
    config: Config,
    input: PathBuf,
    spec: PathBuf,
    out: PathBuf,
    in_process: bool,
) -> ExitCode {
    let cancel = tokio_util::sync::CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    let paths = media_node::process::Paths {
        input: &input,
        spec: &spec,
        out: &out,
    };
    match media_node::process::run(&config, paths, in_process, cancel).await {
        Ok(result) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&result).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("media-node: {}: {}", err.code, err.message);
            ExitCode::FAILURE
        }
    }
}

async fn check(config: Config) -> ExitCode {
    let lines = media_node::check::run(&config).await;
    let mut ok = true;
    for line in &lines {
        ok &= line.verdict != Verdict::Fail;
        println!("{} {:<22} {}", line.verdict, line.name, line.detail);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
