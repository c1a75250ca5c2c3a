//! Benchmark (not a timed test): apply a typical edge document with Cairn and with
//! Debian's cloud-init (its modules in cloud-init's own order, `cloud-init single` each) in
//! twin copies of the cached Debian root, and print the ratios.
//!
//! Run: `cargo bench -p cairn-tests --bench apply_vs_cloud_init` (as root; builds the
//! Debian root on first use). `CAIRN_BENCH_RUNS` sets the repetitions (default 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use cairn_tests::{agent_binary, DebianRoot};

fn edge_document(with_cas: &[String]) -> String {
    let mut d = String::from("#cloud-config\n");
    d.push_str("users:\n");
    for (i, name) in ["ops", "deploy", "metrics", "logship", "support"]
        .iter()
        .enumerate()
    {
        d.push_str(&format!("  - name: {name}\n    gecos: Edge user {i}\n    shell: /bin/bash\n    groups: [users, edge]\n"));
        if i == 0 {
            d.push_str("    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n");
        }
        if i == 1 {
            d.push_str("    lock_passwd: false\n    passwd: $6$j212wezy$7H/1LT4f9/N3wpgNunhsIqtMj62OKiS3nyNwuizouQc3u7MbYCarYeAHWYPYb2FT.lbioDm2RrkJPb9BZMN1O/\n");
        }
        d.push_str(&format!("    ssh_authorized_keys:\n      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchKey{i}ForCairnAAAAAAAAAAAAAAAAAAAAAAAAAA {name}@site\n"));
    }
    d.push_str("write_files:\n");
    d.push_str("  - path: /etc/sysctl.d/90-edge.conf\n    content: |\n      net.ipv4.ip_forward = 1\n      net.bridge.bridge-nf-call-iptables = 1\n      fs.inotify.max_user_watches = 524288\n");
    for i in 1..20 {
        d.push_str(&format!(
            "  - path: /etc/edge/conf.d/{i:02}-site.conf\n    permissions: '0640'\n    content: |\n      # site setting {i}\n      key_{i} = value-{i}\n      region = eu-west\n"
        ));
    }
    if !with_cas.is_empty() {
        d.push_str("ca_certs:\n  trusted:\n");
        for pem in with_cas {
            d.push_str("    - |\n");
            for l in pem.lines() {
                d.push_str(&format!("      {l}\n"));
            }
        }
    }
    d.push_str("runcmd:\n  - mkdir -p /var/lib/edge\n  - [sh, -c, \"echo ready > /var/lib/edge/state\"]\n  - touch /var/lib/edge/provisioned\n");
    d
}

fn make_ca(dir: &std::path::Path, cn: &str) -> String {
    let crt = dir.join(format!("{cn}.crt"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-keyout"])
        .arg(dir.join(format!("{cn}.key")))
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(crt).unwrap()
}

fn time_cairn(root: &DebianRoot, doc: &std::path::Path) -> Duration {
    let bin = agent_binary().unwrap();
    let started = Instant::now();
    let out = Command::new(bin)
        .args(["apply", "--root"])
        .arg(root.path())
        .arg(doc)
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "cairn failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn time_cloud_init(root: &DebianRoot, doc: &str, modules: &[&str]) -> Duration {
    let started = Instant::now();
    for m in modules {
        root.cloud_init(doc, m).unwrap();
    }
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runs: usize = std::env::var("CAIRN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    agent_binary().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cas = vec![
        make_ca(tmp.path(), "bench-ca-1"),
        make_ca(tmp.path(), "bench-ca-2"),
    ];
    let cases: [(&str, Vec<String>, &[&str]); 2] = [
        (
            "5 users, 20 files, sysctl, 3 commands",
            vec![],
            &["write_files", "users_groups", "runcmd", "scripts_user"],
        ),
        (
            "the same plus 2 CA certificates",
            cas,
            &[
                "write_files",
                "ca_certs",
                "users_groups",
                "runcmd",
                "scripts_user",
            ],
        ),
    ];
    println!(
        "apply_vs_cloud_init: median of {runs} run(s), each on a fresh copy of the Debian root"
    );
    for (label, cas, modules) in cases {
        let doc = edge_document(&cas);
        let doc_file = tmp.path().join("edge.yaml");
        std::fs::write(&doc_file, &doc).unwrap();
        let (mut cairn, mut again, mut cloud) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let a = DebianRoot::new().unwrap();
            cairn.push(time_cairn(&a, &doc_file));
            again.push(time_cairn(&a, &doc_file));
            let b = DebianRoot::new().unwrap();
            cloud.push(time_cloud_init(&b, &doc, modules));
        }
        let (c, r, k) = (median(cairn), median(again), median(cloud));
        println!("\n{label}");
        println!("  cairn-agent apply        {:>9.1} ms", ms(c));
        println!(
            "  cairn-agent re-apply     {:>9.1} ms   (nothing changed; trust-store tool not run)",
            ms(r)
        );
        println!(
            "  cloud-init {:<13} {:>9.1} ms",
            format!("({} modules)", modules.len()),
            ms(k)
        );
        println!("  ratio cloud-init / cairn {:>9.1}x", ms(k) / ms(c));
    }
}
