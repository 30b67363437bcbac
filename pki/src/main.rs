//! `pki`: command-line front end of the kubeadm-compatible PKI library.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pki::duration::parse_duration;
use pki::expiry::Format;
use pki::key::KeyAlgorithm;
use pki::layout::{DEFAULT_CERT_DIR, DEFAULT_KUBECONFIG_DIR, Layout};
use pki::spec::{self, ClusterSpec};
use pki::{Error, Result};

/// Issue and check a Kubernetes control-plane PKI in kubeadm's layout.
#[derive(Parser)]
#[command(name = "pki", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create every missing CA, certificate, key, SA key pair and kubeconfig; keep valid ones.
    Init(InitArgs),
    /// Write a key and a CSR for every certificate and kubeconfig init would issue (external CA).
    GenerateCsr(InitArgs),
    /// Show when every certificate expires.
    CheckExpiration(CheckArgs),
    /// Re-issue leaf certificates and kubeconfig client certificates from the current CA.
    Renew(RenewArgs),
    /// Issue a node's kubelet client and serving certificates and its kubelet.conf.
    Kubelet(KubeletArgs),
    /// Sign a PEM CSR under the rules of a Kubernetes built-in signer.
    SignCsr(SignCsrArgs),
    /// Clean up what a killed `pki` run left (temporary files, unused generations, journals of
    /// earlier builds), before the components read the files: run at boot before the kubelet.
    Recover(RecoverArgs),
    /// Rotate a CA or the service-account key without downtime: start, switch, finish
    /// (or status, abort).
    Rotate(RotateArgs),
    /// One unattended pass: renew what is due, restart the static pods one at a time, report.
    Autopilot(AutopilotArgs),
}

/// The two directories every subcommand takes.
#[derive(Args)]
struct Dirs {
    /// Directory of certificates and keys.
    #[arg(long, default_value = DEFAULT_CERT_DIR)]
    cert_dir: PathBuf,
    /// Directory of kubeconfig files.
    #[arg(long, default_value = DEFAULT_KUBECONFIG_DIR)]
    kubeconfig_dir: PathBuf,
}

impl Dirs {
    fn layout(&self) -> Layout {
        Layout::new(&self.cert_dir, &self.kubeconfig_dir)
    }
}

#[derive(Args)]
struct InitArgs {
    /// kubeadm config file; its ClusterConfiguration, InitConfiguration and JoinConfiguration
    /// (v1beta3/v1beta4) are read. Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kubernetes version whose kubeadm PKI to reproduce, vX.Y[.Z] (1.28 to 1.37)
    /// [default: kubernetesVersion of --config, else v1.37].
    #[arg(long)]
    kubernetes_version: Option<pki::version::KubernetesVersion>,
    /// This node joins an existing control plane: no super-admin.conf (kubeadm creates it only
    /// on the node where the cluster was initialised). Implied by a --config holding a
    /// JoinConfiguration and no InitConfiguration.
    #[arg(long)]
    control_plane_join: bool,
    /// Directory of certificates and keys [default: certificatesDir or /etc/kubernetes/pki].
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Directory of kubeconfig files.
    #[arg(long, default_value = DEFAULT_KUBECONFIG_DIR)]
    kubeconfig_dir: PathBuf,
    /// Node name [default: host name].
    #[arg(long)]
    node_name: Option<String>,
    /// API server advertise address [default: address of the default route].
    #[arg(long)]
    apiserver_advertise_address: Option<IpAddr>,
    /// API server port [default: localAPIEndpoint.bindPort, else 6443].
    #[arg(long)]
    apiserver_bind_port: Option<u16>,
    /// Stable endpoint (`host[:port]`) of the control plane.
    #[arg(long)]
    control_plane_endpoint: Option<String>,
    /// Service CIDR(s), comma-separated for dual-stack [default: 10.96.0.0/12].
    #[arg(long)]
    service_cidr: Option<String>,
    /// Service DNS domain [default: cluster.local].
    #[arg(long)]
    service_dns_domain: Option<String>,
    /// Extra API server SANs (IPs or DNS names), comma-separated.
    #[arg(long, value_delimiter = ',')]
    apiserver_cert_extra_sans: Vec<String>,
    /// Key algorithm: RSA-2048, RSA-3072, RSA-4096, ECDSA-P256, ECDSA-P384 [default: RSA-2048].
    #[arg(long)]
    encryption_algorithm: Option<KeyAlgorithm>,
    /// Lifetime of new CAs, e.g. 87600h [default: 10 years].
    #[arg(long, value_parser = parse_duration)]
    ca_certificate_validity_period: Option<std::time::Duration>,
    /// Lifetime of new leaf certificates, e.g. 8760h [default: 1 year].
    #[arg(long, value_parser = parse_duration)]
    certificate_validity_period: Option<std::time::Duration>,
    /// Print what would be created or changed; write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
    Yaml,
    Prometheus,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    dirs: Dirs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: OutputFormat,
    /// Write the output atomically to this file (e.g. a node-exporter textfile .prom) instead of stdout.
    #[arg(long)]
    output_file: Option<PathBuf>,
    /// Exit with status 2 when any certificate expires within this duration (720h, 30d).
    #[arg(long, value_parser = parse_duration)]
    fail_within: Option<std::time::Duration>,
    /// Exit with status 3 when an expected file is missing (checked after --fail-within).
    #[arg(long)]
    fail_on_missing: bool,
}

#[derive(Args)]
struct RenewArgs {
    /// `all`, or names: apiserver, apiserver-kubelet-client, apiserver-etcd-client,
    /// front-proxy-client, etcd-server, etcd-peer, etcd-healthcheck-client, admin.conf,
    /// super-admin.conf, controller-manager.conf, scheduler.conf.
    #[arg(required = true)]
    names: Vec<String>,
    #[command(flatten)]
    dirs: Dirs,
    /// Renew only certificates that expire within this duration.
    #[arg(long, value_parser = parse_duration)]
    if_expiring_within: Option<std::time::Duration>,
    /// Lifetime of the renewed certificates.
    #[arg(long, value_parser = parse_duration, default_value = "8760h")]
    certificate_validity_period: std::time::Duration,
    /// Give the version-dependent subjects (O of apiserver-kubelet-client, of the etcd clients
    /// and of admin.conf) the values of this Kubernetes version, vX.Y[.Z]; without it every
    /// subject is kept as it is, as kubeadm's renew does.
    #[arg(long)]
    kubernetes_version: Option<pki::version::KubernetesVersion>,
    /// Re-issue each certificate over its current key (which must match): one rename per
    /// certificate, so a crash or power loss at any point never pairs a new key with an old
    /// certificate. Without it every certificate gets a fresh key.
    #[arg(long)]
    reuse_key: bool,
    /// Print what would be renewed or changed; write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct RecoverArgs {
    #[command(flatten)]
    dirs: Dirs,
    /// The kubelet's credentials directory to recover too (e.g. /var/lib/kubelet/pki).
    #[arg(long)]
    kubelet_dir: Option<PathBuf>,
}

#[derive(Args)]
struct KubeletArgs {
    #[command(flatten)]
    dirs: Dirs,
    /// Node name (CN system:node:<name>).
    #[arg(long)]
    node_name: String,
    /// Node IP address(es) for the serving certificate; repeat or comma-separate.
    #[arg(long, value_delimiter = ',')]
    node_ip: Vec<IpAddr>,
    /// Host name(s) for the serving certificate [default: the node name]; repeat or comma-separate.
    #[arg(long, value_delimiter = ',')]
    hostname: Vec<String>,
    /// Directory for kubelet-client-current.pem, kubelet.crt and kubelet.key [default:
    /// /var/lib/kubelet/pki, only when --node-name is this host].
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// The kubelet's certificate directory on that node, which kubelet.conf references.
    #[arg(long, default_value = pki::kubelet::DEFAULT_OUT_DIR)]
    kubelet_dir: PathBuf,
    /// API server URL for kubelet.conf [default: the server of admin.conf in --kubeconfig-dir].
    #[arg(long)]
    server: Option<String>,
    /// Key algorithm.
    #[arg(long, default_value = "ECDSA-P256")]
    encryption_algorithm: KeyAlgorithm,
    /// Lifetime of the certificates.
    #[arg(long, value_parser = parse_duration, default_value = "8760h")]
    certificate_validity_period: std::time::Duration,
    /// Kubernetes version of the node, vX.Y[.Z] (1.28 to 1.37) [default: v1.37]; the kubelet
    /// credentials are the same on every supported version, unsupported ones are refused.
    #[arg(long, default_value_t)]
    kubernetes_version: pki::version::KubernetesVersion,
    /// Print what would be created or changed; write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum RotateTarget {
    Ca,
    FrontProxyCa,
    EtcdCa,
    Sa,
}

#[derive(Clone, Copy, ValueEnum)]
enum RotatePhase {
    /// Generate the new CA/key; trust old and new; keep signing with the old one.
    Start,
    /// Re-issue everything from the new CA; sign with the new key; still trust both.
    Switch,
    /// Drop the old CA/key from every bundle.
    Finish,
    /// Show where the rotation stands and what every bundle holds.
    Status,
    /// Before finish: put every file back exactly as before start.
    Abort,
}

#[derive(Clone, Copy, ValueEnum)]
enum TextOrJson {
    Text,
    Json,
}

#[derive(Args)]
struct RotateArgs {
    /// What to rotate.
    #[arg(value_enum)]
    target: RotateTarget,
    /// The phase to run.
    #[arg(value_enum)]
    phase: RotatePhase,
    #[command(flatten)]
    dirs: Dirs,
    /// Static pod manifest directory (e.g. /etc/kubernetes/manifests): at `ca start`,
    /// kube-controller-manager's --cluster-signing-*-file flags are pointed at the
    /// single-certificate signer files; `finish` and `abort` put them back.
    #[arg(long)]
    manifests_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: TextOrJson,
    /// Lifetime of the new CA (start).
    #[arg(long, value_parser = parse_duration, default_value = "87600h")]
    ca_certificate_validity_period: std::time::Duration,
    /// Lifetime of the certificates re-issued at switch.
    #[arg(long, value_parser = parse_duration, default_value = "8760h")]
    certificate_validity_period: std::time::Duration,
    /// sa: the longest lifetime of a service-account token signed by the old key (recorded at
    /// start/switch); `finish` is refused until this much time has passed since `switch`
    /// [default: 24h].
    #[arg(long, value_parser = parse_duration)]
    max_token_lifetime: Option<std::time::Duration>,
    /// sa finish: drop the old key even if tokens it signed may still be valid; with
    /// --kubeconfig: pass any closed gate of the cluster's view (each is named in the output).
    #[arg(long)]
    force: bool,
    /// start, first control-plane node: write the rotation's shared material (old and new CA,
    /// new key, rotation id) to FILE (0600), encrypted under --certificate-key, for the other
    /// control-plane nodes, and FILE.public (CA certificates only, no key) for the workers. Run
    /// it again while the rotation is in progress to export afresh.
    #[arg(long, value_name = "FILE", conflicts_with = "join")]
    export: Option<PathBuf>,
    /// How long the --export file is accepted by --join (as kubeadm's uploaded certificates).
    #[arg(long, value_parser = parse_duration, default_value = "2h", value_name = "DURATION")]
    export_ttl: std::time::Duration,
    /// start, every other control-plane node: take the new CA (key) from FILE (written by
    /// --export); nothing changes unless it decrypts, is of this target and its old CA is this
    /// node's.
    #[arg(long, value_name = "FILE")]
    join: Option<PathBuf>,
    /// The 32-byte key of --export/--join, as 64 hex characters (kubeadm's format); generated and
    /// printed once by --export when absent. Visible to other local users on the command line:
    /// prefer --certificate-key-file.
    #[arg(long, value_name = "HEX", conflicts_with = "certificate_key_file")]
    certificate_key: Option<String>,
    /// Read the --certificate-key from FILE (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    certificate_key_file: Option<PathBuf>,
    /// ca start --join / finish on a worker node: update only ca.crt and kubelet.conf's CA data,
    /// from the workers' bundle (`--join FILE.public --ca-cert-hash sha256:HEX`); no key.
    #[arg(long)]
    worker: bool,
    /// With --worker: the pin --export printed for FILE.public's new CA (`sha256:<hex>` of its
    /// SubjectPublicKeyInfo, as kubeadm's --discovery-token-ca-cert-hash).
    #[arg(long, value_name = "sha256:HEX", requires = "worker")]
    ca_cert_hash: Option<String>,
    /// switch: confirm that every other control-plane node and every worker ran `start` and its
    /// restarts; abort: confirm that no node has run `switch`. This node cannot see its peers,
    /// so `switch` and `abort` are refused without it.
    #[arg(long, conflicts_with = "kubeconfig")]
    confirm_nodes: bool,
    /// Coordinate through the Kubernetes API (admin.conf, or an identity with the RBAC in
    /// pki/README.md): each node records its progress in the ConfigMap
    /// kube-system/pki-rotation-<target>-<id>, and switch, finish and abort are gated on every
    /// node's entry (and the Nodes, and the kubelets' CSRs); status shows the whole cluster.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// With --kubeconfig: this node's name, as its Node object is named [default: the host
    /// name, lower case].
    #[arg(long, value_name = "NAME", requires = "kubeconfig")]
    node_name: Option<String>,
    /// Print what the phase would create or change (cert dir, kubeconfigs, manifests, state,
    /// backups, --export file); write nothing. Refused as the phase itself would be.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct SignCsrArgs {
    #[command(flatten)]
    dirs: Dirs,
    /// Signer name, e.g. kubernetes.io/kubelet-serving.
    #[arg(long)]
    signer: pki::csr::Signer,
    /// PEM CSR file (`-` for stdin).
    #[arg(long)]
    csr: PathBuf,
    /// Write the certificate here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Usages to grant (Kubernetes names, comma-separated) [default: those requested in the CSR,
    /// else the signer's defaults].
    #[arg(long, value_delimiter = ',')]
    usages: Vec<String>,
    /// Lifetime of the certificate (capped at the CA's).
    #[arg(long, value_parser = parse_duration, default_value = "8760h")]
    duration: std::time::Duration,
}

#[derive(Args)]
struct AutopilotArgs {
    #[command(flatten)]
    dirs: Dirs,
    /// Static pod manifests; a component without one is renewed but not restarted.
    #[arg(long, default_value = "/etc/kubernetes/manifests")]
    manifests_dir: PathBuf,
    /// Renew once less than this remains (instead of the default: a third of the lifetime
    /// left, at the latest 30 days before expiry).
    #[arg(long, value_parser = parse_duration, conflicts_with = "renew_at_fraction")]
    renew_before: Option<std::time::Duration>,
    /// Renew once this fraction of the lifetime has elapsed (0 < F <= 1), at the latest 30 days
    /// before expiry [default: 0.667].
    #[arg(long)]
    renew_at_fraction: Option<f64>,
    /// Wait a random time up to this long first (spreads the nodes of a cluster).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    jitter: std::time::Duration,
    /// Lifetime of the renewed certificates.
    #[arg(long, value_parser = parse_duration, default_value = "8760h")]
    certificate_validity_period: std::time::Duration,
    /// How long each restarted component has to become healthy.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    health_timeout: std::time::Duration,
    /// Write the Prometheus textfile (check-expiration's metrics plus the autopilot's) here.
    #[arg(long)]
    metrics_file: Option<PathBuf>,
    /// Print what would be renewed and restarted; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Take the cluster-wide Lease kube-system/pki-autopilot before changing anything, so that
    /// one node at a time restarts components (admin.conf, or an identity that may get,
    /// create and update that Lease).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// With --kubeconfig: this node's name in the Lease [default: the host name, lower case].
    #[arg(long, value_name = "NAME", requires = "kubeconfig")]
    node_name: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(a) => run_init(a),
        Command::GenerateCsr(a) => run_generate_csr(a),
        Command::CheckExpiration(a) => run_check(a),
        Command::Renew(a) => run_renew(a),
        Command::Kubelet(a) => run_kubelet(a),
        Command::SignCsr(a) => run_sign_csr(a),
        Command::Recover(a) => run_recover(a),
        Command::Rotate(a) => run_rotate(a),
        Command::Autopilot(a) => run_autopilot(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The layout, cluster spec and dry-run choice of `init` and `generate-csr`.
fn init_inputs(a: InitArgs) -> Result<(Layout, ClusterSpec, bool)> {
    let cfg = a
        .config
        .as_deref()
        .map(pki::kubeadm_config::load)
        .transpose()?
        .unwrap_or_default();
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    let node_name = a
        .node_name
        .or(cfg.node_name)
        .or_else(spec::default_node_name)
        .ok_or_else(|| Error::Config("cannot determine the node name; pass --node-name".into()))?;
    let advertise = a
        .apiserver_advertise_address
        .or(cfg.advertise_address)
        .or_else(spec::default_advertise_address)
        .ok_or_else(|| {
            Error::Config(
                "cannot determine the advertise address; pass --apiserver-advertise-address".into(),
            )
        })?;
    let mut s = ClusterSpec::new(node_name, advertise);
    s.bind_port = a.apiserver_bind_port.or(cfg.bind_port).unwrap_or(6443);
    s.kubernetes_version = a
        .kubernetes_version
        .or(cfg.kubernetes_version)
        .unwrap_or_default();
    s.control_plane_join = a.control_plane_join || cfg.control_plane_join;
    s.etcd_external = cfg.etcd_external;
    if let Some(name) = cfg.cluster_name {
        s.cluster_name = name;
    }
    s.control_plane_endpoint = a.control_plane_endpoint.or(cfg.control_plane_endpoint);
    let cidr = a
        .service_cidr
        .or(cfg.service_subnet)
        .unwrap_or_else(|| "10.96.0.0/12".to_owned());
    s.service_ips = spec::service_ips(&cidr)?;
    if let Some(d) = a.service_dns_domain.or(cfg.dns_domain) {
        s.dns_domain = d;
    }
    s.apiserver_extra_sans = cfg.apiserver_cert_sans;
    s.apiserver_extra_sans.extend(a.apiserver_cert_extra_sans);
    s.etcd_server_extra_sans = cfg.etcd_server_cert_sans;
    s.etcd_peer_extra_sans = cfg.etcd_peer_cert_sans;
    if let Some(alg) = a.encryption_algorithm.or(cfg.encryption_algorithm) {
        s.key_algorithm = alg;
    }
    if let Some(v) = a
        .ca_certificate_validity_period
        .or(cfg.ca_certificate_validity)
    {
        s.ca_validity = v;
    }
    if let Some(v) = a.certificate_validity_period.or(cfg.certificate_validity) {
        s.leaf_validity = v;
    }
    let cert_dir = a
        .cert_dir
        .or(cfg.certificates_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CERT_DIR));
    let layout = Layout::new(cert_dir, a.kubeconfig_dir);
    Ok((layout, s, a.dry_run))
}

fn run_generate_csr(a: InitArgs) -> Result<ExitCode> {
    let (layout, s, dry_run) = init_inputs(a)?;
    let scratch = dry_run
        .then(|| pki::dry_run::Scratch::new(&layout))
        .transpose()?;
    let written =
        pki::generate_csr::generate_csr(scratch.as_ref().map_or(&layout, |s| &s.layout), &s)?;
    match &scratch {
        Some(sc) => print_changes(sc)?,
        None => {
            for p in &written {
                println!("[certs] created {}", p.display());
            }
            println!(
                "Have the external CA sign every .csr: save a leaf's certificate as <name>.crt beside \
                 its key, add a kubeconfig's (base64) to its users[].user.client-certificate-data, \
                 then run `pki init`."
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_init(a: InitArgs) -> Result<ExitCode> {
    let (layout, s, dry_run) = init_inputs(a)?;
    let scratch = dry_run
        .then(|| pki::dry_run::Scratch::new(&layout))
        .transpose()?;
    let report = pki::init::init(scratch.as_ref().map_or(&layout, |s| &s.layout), &s)?;
    for action in &report.actions {
        match &scratch {
            Some(sc) => println!("[dry-run] {}", sc.to_original(&action.to_string())),
            None => println!("{action}"),
        }
    }
    if let Some(sc) = &scratch {
        print_changes(sc)?;
    }
    if report.missing.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for m in &report.missing {
        match &scratch {
            Some(sc) => eprintln!("error: {}", sc.to_original(&m.to_string())),
            None => eprintln!("error: {m}"),
        }
    }
    eprintln!(
        "error: {} file(s) must be provided by the external CA's operator",
        report.missing.len()
    );
    Ok(ExitCode::FAILURE)
}

fn run_check(a: CheckArgs) -> Result<ExitCode> {
    let layout = a.dirs.layout();
    layout.settle_for_reading()?;
    let report = pki::expiry::collect(&layout)?;
    let format = match a.output {
        OutputFormat::Table => Format::Table,
        OutputFormat::Json => Format::Json,
        OutputFormat::Yaml => Format::Yaml,
        OutputFormat::Prometheus => Format::Prometheus,
    };
    let text = report.render(format)?;
    match &a.output_file {
        Some(p) => pki::store::write_atomic(p, text.as_bytes(), pki::store::MODE_PUBLIC)?,
        None => print!("{text}"),
    }
    if let Some(w) = a.fail_within {
        let expiring = report.expiring_within(w);
        if !expiring.is_empty() {
            let names: Vec<&str> = expiring.iter().map(|e| e.name.as_str()).collect();
            eprintln!("expiring within the window: {}", names.join(", "));
            return Ok(ExitCode::from(2));
        }
    }
    if a.fail_on_missing {
        let missing = report.missing();
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|e| e.name.as_str()).collect();
            eprintln!("missing: {}", names.join(", "));
            return Ok(ExitCode::from(3));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_renew(a: RenewArgs) -> Result<ExitCode> {
    let mut opts = pki::renew::RenewOptions::new(a.certificate_validity_period);
    opts.if_expiring_within = a.if_expiring_within;
    opts.kubernetes_version = a.kubernetes_version;
    opts.reuse_key = a.reuse_key;
    let layout = a.dirs.layout();
    let scratch = a
        .dry_run
        .then(|| pki::dry_run::Scratch::new(&layout))
        .transpose()?;
    let report = pki::renew::renew(
        scratch.as_ref().map_or(&layout, |s| &s.layout),
        &a.names,
        &opts,
    )?;
    if let Some(sc) = &scratch {
        for (name, path) in &report.renewed {
            println!(
                "[dry-run] would renew {name} ({})",
                sc.original_path(path).display()
            );
        }
        for (name, why) in &report.skipped {
            println!("[dry-run] would skip {name}: {}", sc.to_original(why));
        }
        print_changes(sc)?;
        return Ok(ExitCode::SUCCESS);
    }
    for (name, path) in &report.renewed {
        println!("renewed {name} ({})", path.display());
    }
    for (name, why) in &report.skipped {
        println!("skipped {name}: {why}");
    }
    for note in &report.notes {
        println!("NOTE: {note}");
    }
    if report.restart.is_empty() {
        println!("No component needs a restart.");
    } else {
        let list: Vec<&str> = report.restart.iter().copied().collect();
        println!(
            "You must restart {} so that they use the new certificates.",
            list.join(", ")
        );
    }
    if report
        .renewed
        .iter()
        .any(|(n, _)| n == "admin.conf" || n == "super-admin.conf")
    {
        println!("Hand the renewed admin.conf / super-admin.conf to their users.");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_kubelet(a: KubeletArgs) -> Result<ExitCode> {
    let out_dir = match a.out_dir {
        Some(d) => d,
        None => {
            pki::kubelet::check_this_host(&a.node_name)?;
            PathBuf::from(pki::kubelet::DEFAULT_OUT_DIR)
        }
    };
    let layout = a.dirs.layout();
    pki::kubelet::check_kubeconfig_dir(&a.node_name, &layout.kubeconfig_dir)?;
    layout.settle_for_reading()?;
    let ca = pki::renew::signing_ca(&layout, pki::profile::CaId::Ca)?;
    let server = match a.server {
        Some(s) => s,
        None => {
            let admin = layout.kubeconfig_dir.join("admin.conf");
            let text = pki::store::read_secret_optional(&admin)?.ok_or_else(|| {
                Error::Config(format!("{} not found; pass --server", admin.display()))
            })?;
            pki::kubeconfig::parse(&text, &admin)?.server
        }
    };
    let mut req = pki::kubelet::KubeletRequest::new(&a.node_name, server);
    req.node_ips = a.node_ip;
    req.hostnames = a.hostname;
    req.key_algorithm = a.encryption_algorithm;
    req.validity = a.certificate_validity_period;
    // Parsed (and range-checked) by clap; the kubelet credentials do not vary by version.
    let _ = a.kubernetes_version;
    // The whole ca.crt: during a CA rotation it is the old+new bundle the kubelet must trust.
    req.trust_bundle = pki::store::read_optional(&layout.crt("ca"))?;
    req.kubelet_dir = Some(a.kubelet_dir);
    let scratch = a
        .dry_run
        .then(|| pki::dry_run::Scratch::new(&layout))
        .transpose()?;
    let files = pki::kubelet::issue_kubelet(
        &req,
        &ca,
        &scratch
            .as_ref()
            .map_or(out_dir.clone(), |s| s.extra_dir("kubelet")),
        &scratch
            .as_ref()
            .map_or(&layout, |s| &s.layout)
            .kubeconfig_dir
            .join("kubelet.conf"),
    )?;
    if let Some(sc) = &scratch {
        for p in [
            &files.client_pem_versioned,
            &files.client_pem,
            &files.serving_crt,
            &files.serving_key,
        ] {
            let real = out_dir.join(p.file_name().unwrap_or_default());
            let verb = match real.symlink_metadata() {
                Ok(_) => "change",
                Err(_) => "create",
            };
            println!("[dry-run] would {verb} {}", real.display());
        }
        print_changes(sc)?;
        return Ok(ExitCode::SUCCESS);
    }
    for p in [
        &files.client_pem_versioned,
        &files.client_pem,
        &files.serving_crt,
        &files.serving_key,
        &files.kubeconfig,
    ] {
        println!("wrote {}", p.display());
    }
    println!("You must restart kubelet so that it uses the new credentials.");
    Ok(ExitCode::SUCCESS)
}

fn run_recover(a: RecoverArgs) -> Result<ExitCode> {
    let completed = pki::recover::recover(&a.dirs.layout(), a.kubelet_dir.as_deref())?;
    for journal in &completed {
        println!("completed the commit of {}", journal.display());
    }
    if completed.is_empty() {
        println!("nothing to recover");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_sign_csr(a: SignCsrArgs) -> Result<ExitCode> {
    let pem = if a.csr.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .take(pki::csr::MAX_CSR_BYTES as u64 + 1)
            .read_to_string(&mut s)
            .map_err(|e| Error::io("<stdin>", e))?;
        s
    } else {
        let bytes = std::fs::read(&a.csr).map_err(|e| Error::io(&a.csr, e))?;
        String::from_utf8(bytes).map_err(|_| Error::CsrRefused("not PEM text".into()))?
    };
    let layout = a.dirs.layout();
    layout.settle_for_reading()?;
    let ca = pki::renew::signing_ca(&layout, pki::profile::CaId::Ca)?;
    let ca_key = ca
        .key
        .as_ref()
        .ok_or_else(|| Error::Config("CA key missing".into()))?;
    let usages = (!a.usages.is_empty()).then_some(a.usages.as_slice());
    let cert = pki::csr::sign(&pem, a.signer, usages, a.duration, &ca.cert, ca_key)?;
    match a.out {
        Some(p) => pki::store::write_atomic(&p, cert.pem().as_bytes(), pki::store::MODE_PUBLIC)?,
        None => print!("{}", cert.pem()),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_rotate(a: RotateArgs) -> Result<ExitCode> {
    use pki::rotate::{self, Phase, Target};
    let layout = a.dirs.layout();
    let target = match a.target {
        RotateTarget::Ca => Target::Ca,
        RotateTarget::FrontProxyCa => Target::FrontProxyCa,
        RotateTarget::EtcdCa => Target::EtcdCa,
        RotateTarget::Sa => Target::Sa,
    };
    let json = matches!(a.output, TextOrJson::Json);
    let mut opts = rotate::Options::default();
    opts.manifests_dir = a.manifests_dir;
    opts.ca_validity = a.ca_certificate_validity_period;
    opts.leaf_validity = a.certificate_validity_period;
    opts.max_token_lifetime = a.max_token_lifetime;
    opts.force = a.force;
    opts.confirm_nodes = a.confirm_nodes;
    opts.export = a.export;
    opts.export_ttl = a.export_ttl;
    opts.join = a.join;
    opts.certificate_key = match (&a.certificate_key, &a.certificate_key_file) {
        (Some(hex), _) => Some(rotate::CertificateKey::from_hex(hex)?),
        (None, Some(file)) => Some(rotate::CertificateKey::from_file(file)?),
        (None, None) => None,
    };
    let generated_key = if opts.export.is_some() && opts.certificate_key.is_none() {
        let key = rotate::CertificateKey::generate()?;
        let hex = key.to_hex();
        opts.certificate_key = Some(key);
        Some(hex)
    } else {
        None
    };
    // Test support: exit abruptly after N steps, as a crash would (see tests/it/rotate_crash.rs).
    if let Some(n) = std::env::var(rotate::FAIL_AFTER_STEP_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut count = 0;
        opts.after_step = Some(Box::new(move |step: &str| {
            count += 1;
            if count >= n {
                eprintln!("{}: exiting after step {step}", rotate::FAIL_AFTER_STEP_ENV);
                std::process::exit(86);
            }
        }));
    }
    let cluster = a
        .kubeconfig
        .as_deref()
        .map(pki::cluster::Cluster::connect)
        .transpose()?;
    // `None`: abort.
    let phase = match a.phase {
        RotatePhase::Status => {
            // Only reads: the same with or without --dry-run.
            let report = rotate::status::collect(&layout)?;
            let whole = cluster
                .map(|c| pki::cluster::status::collect(&c, target))
                .transpose()?;
            match (json, whole) {
                (true, None) => println!("{}", to_json(&report)?),
                (true, Some(w)) => println!(
                    "{}",
                    to_json(&serde_json::json!({ "node": report, "cluster": w }))?
                ),
                (false, w) => {
                    print!("{}", report.render_text());
                    if let Some(w) = w {
                        print!("{}", w.render_text());
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        RotatePhase::Start => Some(Phase::Start),
        RotatePhase::Switch => Some(Phase::Switch),
        RotatePhase::Finish => Some(Phase::Finish),
        RotatePhase::Abort => None,
    };
    if let Some(cluster) = cluster {
        let node = match a.node_name {
            Some(n) => n,
            None => pki::cluster::default_node_name()?,
        };
        opts.coordinator = Some(Box::new(pki::cluster::ClusterCoordinator::new(
            cluster, node, a.force, !a.dry_run,
        )));
    }
    let worker = a.worker;
    let ca_cert_hash = a.ca_cert_hash;
    let execute = move |layout: &Layout, opts: &mut rotate::Options| match (phase, worker) {
        (Some(Phase::Start), true) => {
            let (Some(join), Some(pin)) = (opts.join.as_deref(), ca_cert_hash.as_deref()) else {
                return Err(Error::Config(
                    "start --worker needs --join FILE.public and --ca-cert-hash sha256:HEX".into(),
                ));
            };
            if opts.certificate_key.is_some() {
                return Err(Error::Config(
                    "--worker takes no certificate key: a worker never opens the control-plane file"
                        .into(),
                ));
            }
            let join = join.to_path_buf();
            rotate::worker::start(layout, target, &join, pin, opts)
        }
        (Some(Phase::Finish), true) => rotate::worker::finish(layout, target, opts),
        (_, true) => Err(Error::Config(
            "--worker applies to start and finish only".into(),
        )),
        (None, false) => rotate::abort(layout, target, opts),
        (Some(p), false) => rotate::run(layout, target, p, opts),
    };
    if a.dry_run {
        let report = rotate::dry_run(&layout, &mut opts, execute)?;
        print_rotate_dry_run(&report, generated_key.is_some(), json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = execute(&layout, &mut opts)?;
    if let Some(hex) = &generated_key {
        // Shown once (on stderr with `-o json`, which stays parseable): every other node's
        // --join needs it.
        let line = format!(
            "[rotate] certificate key (shown once; pass it as --certificate-key with --join on every other node): {}",
            hex.as_str()
        );
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    if json {
        println!("{}", to_json(&outcome)?);
        return Ok(ExitCode::SUCCESS);
    }
    let what = outcome.phase.map_or("abort", |p| p.as_str());
    if outcome.already_done {
        println!("[rotate] {target} {what}: already complete, nothing to do");
    } else {
        println!("[rotate] {target} {what}: done");
        for s in &outcome.steps {
            println!("[rotate] step {s}");
        }
    }
    if let Some(b) = &outcome.backup {
        println!("[rotate] backup: {}", b.display());
    }
    for n in &outcome.notes {
        println!("[rotate] note: {n}");
    }
    println!("Restart sequence (in this order) before the next phase:");
    print!("{}", rotate::restart::render(&outcome.restart));
    if let Some(n) = &outcome.next {
        println!("Next: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_autopilot(a: AutopilotArgs) -> Result<ExitCode> {
    use pki::autopilot::{self, Policy};
    let mut opts = autopilot::Options::new(&a.manifests_dir);
    opts.policy = match (a.renew_before, a.renew_at_fraction) {
        (Some(d), _) => Policy::Before(d),
        (None, Some(f)) => Policy::fraction(f).ok_or_else(|| {
            Error::invalid(
                "--renew-at-fraction",
                "must be greater than 0 and at most 1",
            )
        })?,
        (None, None) => Policy::default(),
    };
    opts.validity = a.certificate_validity_period;
    opts.jitter = a.jitter;
    opts.health_timeout = a.health_timeout;
    opts.metrics_file = a.metrics_file;
    opts.dry_run = a.dry_run;
    opts.break_renewed = std::env::var(autopilot::BREAK_RENEWED_ENV).ok();
    if let Some(kubeconfig) = &a.kubeconfig {
        let node = match a.node_name {
            Some(n) => n,
            None => pki::cluster::default_node_name()?,
        };
        // Held across one component's restart and rollback, renewed before each component.
        let duration = a.health_timeout * 2 + std::time::Duration::from_secs(60);
        let lease = pki::cluster::lease::RestartLease::new(
            pki::cluster::Cluster::connect(kubeconfig)?,
            node,
            duration,
            duration,
        );
        opts.restart_gate = Some(std::sync::Arc::new(lease));
    }
    let outcome = autopilot::run(&a.dirs.layout(), &opts)?;
    print!("{}", outcome.render(a.dry_run));
    Ok(ExitCode::from(outcome.exit_code()))
}

/// Prints what `rotate --dry-run` found: the phase's report and the files it would touch.
fn print_rotate_dry_run(report: &pki::rotate::DryRun, new_key: bool, json: bool) -> Result<()> {
    if new_key {
        // As the real key line: on stderr with `-o json`, which stays parseable.
        let line = "[dry-run] would generate the certificate key for --export and show it once (not in a dry run)";
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    if json {
        println!("{}", to_json(report)?);
        return Ok(());
    }
    let o = &report.outcome;
    let what = o.phase.map_or("abort", |p| p.as_str());
    if o.already_done {
        println!(
            "[dry-run] {} {what}: already complete, nothing to do",
            o.target
        );
    } else {
        println!("[dry-run] {} {what}: would carry out", o.target);
        for s in &o.steps {
            println!("[dry-run] step {s}");
        }
    }
    for n in &o.notes {
        println!("[dry-run] note: {n}");
    }
    if report.changes.is_empty() {
        println!("[dry-run] no file would change");
    }
    for c in &report.changes {
        println!("{c}");
    }
    if !o.already_done {
        println!("Restart sequence (in this order) the phase would require:");
        print!("{}", pki::rotate::restart::render(&o.restart));
    }
    Ok(())
}

/// Prints the files a dry run would create, change or remove.
fn print_changes(scratch: &pki::dry_run::Scratch) -> Result<()> {
    let changes = scratch.changes()?;
    if changes.is_empty() {
        println!("[dry-run] no file would change");
    }
    for c in &changes {
        println!("{c}");
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::Render {
        what: "JSON",
        reason: e.to_string(),
    })
}
