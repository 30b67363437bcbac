//! `kms-plugin`: command-line entry point. Parses arguments and hands off to the library.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kms_config::{
    BackendConfig, FileMode, HumanDuration, LogFormat, MetricsAddress, PluginConfig, SocketAddress,
};
use kms_plugin::root_key::local::Keyring;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Kubernetes KMS v2 plugin with a two-tier envelope (local, PKCS#11 or AWS KMS root key).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the KMS v2 API on a Unix socket.
    ///
    /// Example: kms-plugin serve --socket /var/run/kms-plugin/kms.sock --state-dir /var/lib/kms-plugin
    ///
    /// Example: kms-plugin serve --config /etc/kms-plugin/config.yaml
    Serve(ServeArgs),
    /// Create the state directory (0700) and its first local root key, made primary; prints
    /// its key_id and the SHA-256 of its file (compare it on every node that gets a copy).
    /// Refuses when the directory holds any key: the only command that creates a keyring.
    ///
    /// Example: kms-plugin init --state-dir /var/lib/kms-plugin
    Init {
        #[command(flatten)]
        target: KeyTarget,
    },
    /// Add a new root key version and make it primary (single control-plane node).
    ///
    /// Example: kms-plugin rotate --state-dir /var/lib/kms-plugin
    ///
    /// With --add-only the new version only decrypts until `promote`: copy its file to every
    /// other control-plane node first, then promote it on each node.
    Rotate {
        #[command(flatten)]
        target: KeyTarget,
        /// Add the version without making it primary (step one of a multi-node rotation).
        #[arg(long)]
        add_only: bool,
    },
    /// Make an existing local root key version primary.
    ///
    /// Example: kms-plugin promote --state-dir /var/lib/kms-plugin --version 2
    Promote {
        #[command(flatten)]
        target: KeyTarget,
        /// The version to promote.
        #[arg(long)]
        version: u32,
    },
    /// Delete a local root key version that is not primary. Data sealed under it stops decrypting.
    ///
    /// Example: kms-plugin remove-version --state-dir /var/lib/kms-plugin --version 1
    RemoveVersion {
        #[command(flatten)]
        target: KeyTarget,
        /// The version to delete.
        #[arg(long)]
        version: u32,
    },
    /// List local root key versions and their key ids.
    ///
    /// Example: kms-plugin versions --state-dir /var/lib/kms-plugin
    Versions {
        #[command(flatten)]
        target: KeyTarget,
    },
    /// Call Status on a running plugin; exit 0 only when it reports healthy (a readiness or
    /// startup probe). With --live, exit 0 whenever the plugin answers, whatever its root key's
    /// health (a liveness probe: a backend outage must not restart the plugin and empty its
    /// KEK cache).
    ///
    /// Example: kms-plugin status --socket /var/run/kms-plugin/kms.sock
    ///
    /// Example: kms-plugin status --live --socket /var/run/kms-plugin/kms.sock
    ///
    /// Example: kms-plugin status --verbose --socket /var/run/kms-plugin/kms.sock
    Status {
        /// Socket of the plugin.
        #[arg(long, default_value = "kms.sock")]
        socket: SocketAddress,
        /// Deadline of the call.
        #[arg(long, default_value = "3s")]
        timeout: HumanDuration,
        /// Succeed when the plugin answers at all, healthy root key or not.
        #[arg(long)]
        live: bool,
        /// Also print the last successful root key probe, whether the backend is reachable and
        /// the outage policy.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Set up the HSM (PKCS#11) root key.
    #[command(subcommand)]
    Hsm(HsmCommand),
    /// Manage the service-account token signer's key.
    #[command(subcommand)]
    JwtSigner(JwtSignerCommand),
}

#[derive(Subcommand)]
enum HsmCommand {
    /// Create the first root key version in the token unless one exists; prints its key id.
    ///
    /// Example: kms-plugin hsm init --config /etc/kms-plugin/config.yaml
    Init {
        /// Plugin configuration with `backend.kind: pkcs11`.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum JwtSignerCommand {
    /// Create the EC P-256 signing key pair in the token unless it exists; prints its kid.
    ///
    /// Example: kms-plugin jwt-signer init-key --config /etc/kms-plugin/config.yaml
    InitKey {
        /// Plugin configuration with `jwt_signer.key.kind: pkcs11`.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// YAML configuration; flags given here override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Socket path [default: kms.sock]; `@name` (a Linux abstract socket) only with a --config
    /// that sets allow_abstract_socket and allowed_peers.
    #[arg(long)]
    socket: Option<SocketAddress>,
    /// State directory of the local root key [default: kms-state].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Permission bits of the socket file, octal.
    #[arg(long)]
    socket_mode: Option<FileMode>,
    /// Log format: text or json.
    #[arg(long, value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. info or kms_plugin=debug.
    #[arg(long)]
    log_level: Option<String>,
    /// Interval of the background root key probe.
    #[arg(long)]
    health_probe_interval: Option<HumanDuration>,
    /// Serve /metrics, /healthz, /livez and /readyz on this address (host:port, or a port on 127.0.0.1).
    #[arg(long)]
    metrics_address: Option<MetricsAddress>,
}

/// Which local state directory an admin command acts on.
#[derive(Args)]
struct KeyTarget {
    /// State directory of the local root key.
    #[arg(long, conflicts_with = "config")]
    state_dir: Option<PathBuf>,
    /// Plugin configuration naming the backend.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("unknown log format {other:?} (text or json)")),
    }
}

fn serve_config(args: &ServeArgs) -> anyhow::Result<PluginConfig> {
    let mut config = match &args.config {
        Some(path) => PluginConfig::load(path)?,
        None => PluginConfig::local(
            SocketAddress::Path("kms.sock".into()),
            args.state_dir.clone().unwrap_or_else(|| "kms-state".into()),
        ),
    };
    // The zero-configuration development command alone may create `./kms-state` and its first
    // key (with a WARN line); any named directory must hold a keyring `kms-plugin init` made.
    if args.config.is_none()
        && args.state_dir.is_none()
        && let Some(BackendConfig::Local(local)) = config.backend.as_mut()
    {
        local.create_if_missing = true;
    }
    if let Some(socket) = &args.socket {
        config.socket = Some(socket.clone());
    }
    if let Some(state_dir) = &args.state_dir
        && let Some(BackendConfig::Local(local)) = config.backend.as_mut()
    {
        local.state_dir = state_dir.clone();
    }
    if let Some(mode) = args.socket_mode {
        config.socket_mode = mode;
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    if let Some(level) = &args.log_level {
        config.log_level = level.clone();
    }
    if let Some(interval) = args.health_probe_interval {
        config.health_probe_interval = interval;
    }
    if let Some(address) = args.metrics_address {
        config.metrics_address = Some(address);
    }
    config.validate("command line")?;
    Ok(config)
}

fn state_dir(target: &KeyTarget) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &target.state_dir {
        return Ok(dir.clone());
    }
    let Some(path) = &target.config else {
        return Ok(PathBuf::from("kms-state"));
    };
    let config = PluginConfig::load(path)?;
    let backend = config
        .backend
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("{}: no backend configured", path.display()))?;
    match backend {
        BackendConfig::Local(local) => Ok(local.state_dir.clone()),
        other => anyhow::bail!(
            "{}: backend kind {:?} has no local state directory",
            path.display(),
            other.kind()
        ),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = serve_config(&args)?;
    let _log_guard = kms_plugin::telemetry::init_logging(config.log_format, &config.log_level)?;
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let (reload_tx, reload_rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        let mut count = 0;
        while hangup.recv().await.is_some() {
            count += 1;
            tracing::info!("SIGHUP: re-reading the root key");
            if reload_tx.send(count).is_err() {
                break;
            }
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    };
    kms_plugin::server::run(config, shutdown, reload_rx).await
}

async fn rotate(target: KeyTarget, add_only: bool) -> anyhow::Result<()> {
    if let Some(path) = &target.config {
        let config = PluginConfig::load(path)?;
        let backend = config
            .backend
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{}: no backend configured", path.display()))?;
        if !matches!(backend, BackendConfig::Local(_)) {
            anyhow::ensure!(!add_only, "--add-only applies to the local backend only");
            let root = kms_plugin::root_key::build(backend).await?;
            let key_id = root.rotate().await?;
            println!("new primary root key: {key_id}");
            return Ok(());
        }
    }
    let dir = state_dir(&target)?;
    let info = if add_only {
        Keyring::add_version(&dir)?
    } else {
        Keyring::rotate(&dir)?
    };
    let role = if info.primary {
        "primary"
    } else {
        "decrypt-only until promoted"
    };
    println!(
        "added root key version {} ({role}): key_id {}",
        info.version, info.key_id
    );
    println!(
        "file: {}",
        dir.join(format!("root-key-v{}.key", info.version))
            .display()
    );
    Ok(())
}

fn init(target: &KeyTarget) -> anyhow::Result<()> {
    let dir = state_dir(target)?;
    let info = Keyring::init(&dir)?;
    let file = dir.join(format!("root-key-v{}.key", info.version));
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(&file).with_context(|| format!("reading back {}", file.display()))?,
    );
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&*bytes));
    println!(
        "created root key version {} (primary): key_id {}",
        info.version, info.key_id
    );
    println!("file: {}", file.display());
    println!("sha256 of the file: {digest}");
    Ok(())
}

async fn status(socket: SocketAddress, timeout: Duration, verbose: bool) -> anyhow::Result<bool> {
    let probe = kms_plugin::client::probe(&socket, timeout)
        .await
        .with_context(|| format!("Status call to {socket} failed"))?;
    match &probe {
        kms_plugin::client::Probe::Kms {
            version,
            healthz,
            key_id,
            detail,
        } => {
            println!("version: {version}\nhealthz: {healthz}\nkey_id: {key_id}");
            let now = std::time::SystemTime::now();
            if let Some(line) = detail.outage_line(now) {
                println!("outage: {line}");
            }
            if verbose {
                for line in detail.verbose_lines(now) {
                    println!("{line}");
                }
            }
        }
        kms_plugin::client::Probe::Health { serving } => println!(
            "service: grpc.health.v1 (no KMS v2 on this socket)\nhealthz: {}",
            if *serving { "ok" } else { "not serving" }
        ),
    }
    Ok(probe.healthy())
}

#[cfg(feature = "pkcs11")]
async fn hsm_init(path: &std::path::Path) -> anyhow::Result<()> {
    let config = PluginConfig::load(path)?;
    let Some(BackendConfig::Pkcs11(pkcs11)) = &config.backend else {
        anyhow::bail!("{}: backend.kind is not pkcs11", path.display());
    };
    let outcome = kms_plugin::root_key::pkcs11::init_root_key(pkcs11).await?;
    let what = match outcome {
        kms_plugin::root_key::pkcs11::InitOutcome::Created(_) => "created",
        kms_plugin::root_key::pkcs11::InitOutcome::Recorded(_) => "recorded as primary",
        _ => "already present",
    };
    println!("root key {what}: key_id {}", outcome.key_id());
    Ok(())
}

#[cfg(feature = "pkcs11")]
async fn jwt_init_key(path: &std::path::Path) -> anyhow::Result<()> {
    let config = PluginConfig::load(path)?;
    let Some(kms_config::JwtKeyConfig::Pkcs11(pkcs11)) = config.jwt_signer.as_ref().map(|j| &j.key)
    else {
        anyhow::bail!("{}: jwt_signer.key.kind is not pkcs11", path.display());
    };
    let outcome = kms_plugin::jwt::pkcs11::generate_signing_key(pkcs11).await?;
    let what = match outcome {
        kms_plugin::jwt::pkcs11::InitKeyOutcome::Created(_) => "created",
        _ => "already present",
    };
    println!("signing key {what}: kid {}", outcome.kid());
    Ok(())
}

#[cfg(not(feature = "pkcs11"))]
async fn hsm_init(_: &std::path::Path) -> anyhow::Result<()> {
    anyhow::bail!("this build has no PKCS#11 support (cargo feature pkcs11)")
}

#[cfg(not(feature = "pkcs11"))]
async fn jwt_init_key(_: &std::path::Path) -> anyhow::Result<()> {
    anyhow::bail!("this build has no PKCS#11 support (cargo feature pkcs11)")
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await?,
        Command::Init { target } => init(&target)?,
        Command::Rotate { target, add_only } => rotate(target, add_only).await?,
        Command::Promote { target, version } => {
            let dir = state_dir(&target)?;
            let info = Keyring::promote(&dir, version)?;
            println!(
                "root key version {} is primary: key_id {}",
                info.version, info.key_id
            );
        }
        Command::RemoveVersion { target, version } => {
            let dir = state_dir(&target)?;
            Keyring::remove(&dir, version)?;
            println!("removed root key version {version}");
        }
        Command::Versions { target } => {
            let dir = state_dir(&target)?;
            let keyring = Keyring::load(&dir)?;
            for name in keyring.unexpected() {
                eprintln!(
                    "warning: {}: {name:?} is not a root key version (root-key-v<N>.key); ignored",
                    dir.display()
                );
            }
            for info in keyring.list() {
                let role = if info.primary {
                    "primary"
                } else {
                    "decrypt-only"
                };
                println!("v{}\t{role}\t{}", info.version, info.key_id);
            }
        }
        Command::Hsm(HsmCommand::Init { config }) => hsm_init(&config).await?,
        Command::JwtSigner(JwtSignerCommand::InitKey { config }) => jwt_init_key(&config).await?,
        Command::Status {
            socket,
            timeout,
            live,
            verbose,
        } => {
            // An answer at all is life; only readiness needs a healthy root key.
            if !status(socket, timeout.get(), verbose).await? && !live {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long the process waits at exit for work still running in the runtime.
const EXIT_WAIT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kms-plugin: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async {
        match run(cli).await {
            Ok(code) => code,
            Err(error) => {
                eprintln!("kms-plugin: {error:#}");
                ExitCode::from(2)
            }
        }
    });
    // A key store call that never returns (a hung HSM) must not keep the process alive past
    // its shutdown grace: blocking work still running now is abandoned with the process.
    runtime.shutdown_timeout(EXIT_WAIT);
    code
}
