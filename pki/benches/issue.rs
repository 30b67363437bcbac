//! Times issuance of the full kubeadm PKI set (3 CAs, 7 leaves, SA key pair, 5 kubeconfigs)
//! by this library against `openssl-issue.sh`, which produces the same set with the openssl
//! command line, in the same run. Run with `cargo bench -p pki --bench issue`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pki::issue::{self, Ca};
use pki::key::{KeyAlgorithm, PrivateKey};
use pki::layout::Layout;
use pki::profile::{self, CaId};
use pki::spec::ClusterSpec;

fn spec(alg: KeyAlgorithm) -> ClusterSpec {
    let mut s = ClusterSpec::new("cp1", IpAddr::from([192, 168, 10, 5]));
    s.key_algorithm = alg;
    s
}

/// Issues the whole set in memory (keys, certificates, kubeconfig text), no file IO.
fn library_in_memory(alg: KeyAlgorithm) -> usize {
    let s = spec(alg);
    let mut produced = 0;
    let mut cas = Vec::new();
    for p in profile::CAS {
        let key = PrivateKey::generate(alg).unwrap();
        let cert = issue::self_signed_ca(
            &issue::CertSpec::ca(p.common_name, p.dns_names, s.ca_validity),
            &key,
        )
        .unwrap();
        produced += cert.der().len();
        cas.push((
            p.id,
            Ca {
                cert,
                key: Some(key),
            },
        ));
    }
    let ca_of = |id: CaId| &cas.iter().find(|(i, _)| *i == id).unwrap().1;
    for leaf in profile::LEAVES {
        let key = PrivateKey::generate(alg).unwrap();
        let cert =
            issue::issue_for_key(&pki::init::leaf_spec(leaf, &s), &key, ca_of(leaf.ca)).unwrap();
        produced += cert.der().len() + key.pem().len();
    }
    let sa = PrivateKey::generate(alg).unwrap();
    produced += sa.public_key_pem().len();
    let ca = ca_of(CaId::Ca);
    for kc in profile::KUBECONFIGS {
        let want = pki::init::kubeconfig_spec(kc, &s.node_name, &s);
        let key = PrivateKey::generate(alg).unwrap();
        let cert = issue::issue_for_key(&want, &key, ca).unwrap();
        let text = pki::kubeconfig::render(
            &s.server_url(),
            &ca.cert.pem(),
            &want.common_name,
            &cert,
            &key,
        )
        .unwrap();
        produced += text.len();
    }
    produced
}

/// `pki init` into an empty directory: issuance plus atomic, fsynced writes of all 27 files.
fn library_init(alg: KeyAlgorithm, dir: &Path) {
    let layout = Layout::new(dir.join("pki"), dir);
    let report = pki::init::init(&layout, &spec(alg)).unwrap();
    assert!(report.missing.is_empty());
}

fn openssl_script(alg: KeyAlgorithm, dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/openssl-issue.sh");
    testkit::expect_success(Command::new("bash").arg(script).arg(alg.as_str()).arg(dir));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn timed<F: FnOnce()>(f: F) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let iters = |alg| match alg {
        KeyAlgorithm::Rsa2048 => 7,
        _ => 21,
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("full kubeadm set: 3 CAs, 7 leaves, sa.key/sa.pub, 5 kubeconfigs (16 key pairs)");
    println!(
        "the three contenders run interleaved, one of each per round; medians of the rounds (load average at start: {})",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<11} {:>6} {:>14} {:>14} {:>14} {:>12} {:>13}",
        "algorithm",
        "rounds",
        "lib mem (ms)",
        "lib init (ms)",
        "openssl (ms)",
        "openssl/mem",
        "openssl/init"
    );
    for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
        let n = iters(alg);
        // warm-up (page cache, binaries)
        library_in_memory(alg);
        openssl_script(alg, tempfile::tempdir().unwrap().path());
        let (mut mem, mut init, mut ossl) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            mem.push(timed(|| assert!(library_in_memory(alg) > 0)));
            let d = tempfile::tempdir().unwrap();
            init.push(timed(|| library_init(alg, d.path())));
            let d = tempfile::tempdir().unwrap();
            ossl.push(timed(|| openssl_script(alg, d.path())));
        }
        let (mem, init, ossl) = (ms(median(mem)), ms(median(init)), ms(median(ossl)));
        println!(
            "{:<11} {:>6} {:>14.2} {:>14.2} {:>14.2} {:>11.1}x {:>12.1}x",
            alg.as_str(),
            n,
            mem,
            init,
            ossl,
            ossl / mem,
            ossl / init
        );
    }
}
