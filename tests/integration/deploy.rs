//! deploy/: no container engine runs here, so every manifest is parsed and every flag and
//! environment variable it hands zsc is checked against the binary's own `--help`; then zsc
//! is run with exactly those arguments and that environment, to show that each serves TLS
//! (zsc refuses plain text off loopback): it gets as far as reading the certificate, which
//! is not on this machine.

use std::collections::BTreeSet;

use yaml_rust2::{Yaml, YamlLoader};

use crate::process::run_zsc;

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

async fn help(subcommand: &str) -> String {
    let output = run_zsc(&[subcommand, "--help"]).await;
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// `--flag` (without any `=value`) for each argument that is a flag.
fn flags<'a>(args: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    args.into_iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap().to_owned())
        .collect()
}

/// A Kubernetes container's `args`.
fn container_args(container: &Yaml) -> Vec<&str> {
    let args = container["args"].as_vec().unwrap();
    args.iter().map(|a| a.as_str().unwrap()).collect()
}

/// A Kubernetes container's `env`, as (name, value).
fn env_values(container: &Yaml) -> Vec<(String, String)> {
    let env = container["env"].as_vec().unwrap();
    env.iter()
        .map(|e| {
            let value = e["value"].as_str().unwrap();
            (e["name"].as_str().unwrap().to_owned(), value.to_owned())
        })
        .collect()
}

/// The port of the plaintext health listener `args` open.
fn health_port<'a>(args: &[&'a str]) -> &'a str {
    let listen = args.iter().find_map(|a| a.strip_prefix("--health-listen="));
    listen.unwrap().rsplit(':').next().unwrap()
}

/// Every flag and environment variable `container` passes is one `zsc serve --help` lists.
async fn serve_knows(container: &Yaml, args: &[&str], file: &str) {
    let envs = env_values(container).into_iter().map(|(name, _)| name);
    let flags = flags(args.iter().copied());
    assert_known(&help("serve").await, &flags, &envs.collect(), file);
}

fn assert_known(help: &str, flags: &BTreeSet<String>, envs: &BTreeSet<String>, file: &str) {
    assert!(!flags.is_empty(), "{file} passes flags");
    for flag in flags {
        assert!(
            help.contains(&format!("{flag} "))
                || help.contains(&format!("{flag}\n"))
                || help.contains(&format!("{flag} <")),
            "{file}: {flag} is not a zsc flag"
        );
    }
    for env in envs.iter().filter(|e| e.starts_with("ZSC_")) {
        assert!(
            help.contains(&format!("[env: {env}=")),
            "{file}: {env} is not read by zsc serve"
        );
    }
}

async fn serves_tls(args: &[&str], envs: &[(String, String)], file: &str) {
    let mut words = args
        .iter()
        .copied()
        .chain(envs.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]));
    assert!(
        !words.any(|w| w.contains("allow-plaintext") || w.contains("ALLOW_PLAINTEXT")),
        "{file} allows plain text"
    );
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_zsc"))
        .args(args)
        .env_clear()
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{file}: {stderr}");
    assert!(
        stderr.contains("cannot read") && stderr.contains("tls.crt"),
        "{file}: zsc should have stopped only at the missing certificate: {stderr}"
    );
}

#[tokio::test]
async fn the_kubernetes_manifest_parses_and_passes_only_real_flags() {
    let docs = YamlLoader::load_from_str(&read("kubernetes.yaml")).expect("valid YAML");
    let kinds: Vec<_> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["Service", "StatefulSet"]);
    let set = &docs[1]["spec"];
    assert_eq!(set["replicas"].as_i64(), Some(1), "sled is single-writer");
    assert!(
        !set["volumeClaimTemplates"].as_vec().unwrap().is_empty(),
        "data on a PersistentVolumeClaim"
    );
    let pod = &set["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    let args = container_args(container);
    assert_eq!(args[0], "serve");
    serve_knows(container, &args, "kubernetes.yaml").await;

    // Native gRPC probes, on the plaintext health listener the args open.
    let health_port = health_port(&args);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["grpc"]["port"]
                .as_i64()
                .map(|p| p.to_string())
                .as_deref(),
            Some(health_port),
            "{probe}"
        );
    }
    // TLS from a Secret, mounted where --tls-cert and --tls-key point.
    let secret = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"].as_str().is_some())
        .expect("a Secret volume");
    let mount = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["name"] == secret["name"])
        .expect("the Secret is mounted");
    let dir = mount["mountPath"].as_str().unwrap();
    assert!(args.contains(&format!("--tls-cert={dir}/tls.crt").as_str()));
    assert!(args.contains(&format!("--tls-key={dir}/tls.key").as_str()));
    assert!(matches!(
        container["securityContext"]["readOnlyRootFilesystem"],
        Yaml::Boolean(true)
    ));
    let env_values = env_values(container);
    serves_tls(&args, &env_values, "kubernetes.yaml").await;
}

#[tokio::test]
async fn the_replica_manifest_is_a_deployment_on_etcd_passing_only_real_flags() {
    let docs = YamlLoader::load_from_str(&read("kubernetes-replicas.yaml")).expect("valid YAML");
    let kinds: Vec<_> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["Service", "Deployment"]);
    let deployment = &docs[1]["spec"];
    assert!(deployment["replicas"].as_i64().unwrap() >= 2, "replicas");
    let pod = &deployment["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    let args = container_args(container);
    assert_eq!(args[0], "serve");
    let store = args
        .iter()
        .find_map(|a| a.strip_prefix("--store="))
        .expect("the replicas share a store on etcd");
    assert!(
        store.starts_with("etcd://") && store.matches(':').count() >= 4,
        "{store}"
    );
    serve_knows(container, &args, "kubernetes-replicas.yaml").await;
    let health_port = health_port(&args);
    assert_eq!(
        container["readinessProbe"]["grpc"]["port"]
            .as_i64()
            .map(|p| p.to_string())
            .as_deref(),
        Some(health_port)
    );
    let env_values = env_values(container);
    serves_tls(&args, &env_values, "kubernetes-replicas.yaml").await;
}

#[tokio::test]
async fn the_dockerfile_is_multi_stage_non_root_with_a_grpc_health_check() {
    let dockerfile = read("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(
        lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "multi-stage"
    );
    let user = lines
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "non-root: {user}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("VOLUME") && l.contains("/data")));

    // ENV (with its continuation lines) names variables zsc serve reads.
    let joined = dockerfile.replace("\\\n", " ");
    let env_line = joined.lines().find(|l| l.starts_with("ENV ")).expect("ENV");
    let env_values: Vec<(String, String)> = env_line[4..]
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let envs: BTreeSet<String> = env_values.iter().map(|(k, _)| k.clone()).collect();
    assert!(envs.contains("ZSC_DATA_DIR"));
    assert_known(
        &help("serve").await,
        &BTreeSet::from(["--data-dir".to_owned()]),
        &envs,
        "Dockerfile",
    );

    let health = joined
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("HEALTHCHECK");
    let cmd = &health[health.find("CMD").unwrap() + 3..];
    let words: Vec<&str> = cmd
        .split('"')
        .filter(|w| !w.trim().is_empty() && w.trim() != "," && !w.contains('[') && !w.contains(']'))
        .collect();
    assert_eq!(&words[..2], ["zsc", "health-check"]);
    // It checks the plain-text health listener the image opens.
    let health_listen = env_values
        .iter()
        .find(|(k, _)| k == "ZSC_HEALTH_LISTEN")
        .map(|(_, v)| v.as_str())
        .expect("a health listener");
    assert!(
        words.contains(&format!("http://{health_listen}").as_str()),
        "{words:?}"
    );
    let cmd_line = joined.lines().find(|l| l.starts_with("CMD ")).expect("CMD");
    assert!(cmd_line.contains("\"serve\""));
    serves_tls(&["serve"], &env_values, "Dockerfile").await;
    assert_known(
        &help("health-check").await,
        &flags(words.iter().copied()),
        &BTreeSet::new(),
        "Dockerfile HEALTHCHECK",
    );
}

#[tokio::test]
async fn the_systemd_unit_is_hardened_and_passes_only_real_flags() {
    let unit = read("zsc.service");
    let directives: Vec<(&str, &str)> = unit.lines().filter_map(|l| l.split_once('=')).collect();
    let value = |key: &str| directives.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let exec = value("ExecStart").expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/zsc"));
    assert_eq!(words.next(), Some("serve"));
    let env_values: Vec<(String, String)> = directives
        .iter()
        .filter(|(k, _)| *k == "Environment")
        .map(|(_, v)| {
            let (k, v) = v.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let envs = env_values.iter().map(|(k, _)| k.clone()).collect();
    let words: Vec<&str> = words.collect();
    assert_known(
        &help("serve").await,
        &flags(words.iter().copied()),
        &envs,
        "zsc.service",
    );
    // The certificate and key come in as systemd credentials.
    let credentials: Vec<&str> = directives
        .iter()
        .filter(|(k, _)| *k == "LoadCredential")
        .map(|(_, v)| v.split(':').next().unwrap())
        .collect();
    assert_eq!(credentials, ["tls.crt", "tls.key"]);
    let expanded: Vec<String> = words
        .iter()
        .map(|w| w.replace("${CREDENTIALS_DIRECTORY}", "/nonexistent/credentials"))
        .collect();
    let mut args = vec!["serve"];
    args.extend(expanded.iter().map(String::as_str));
    serves_tls(&args, &env_values, "zsc.service").await;
    for (key, expected) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("DynamicUser", "yes"),
        ("UMask", "0077"),
        ("CapabilityBoundingSet", ""),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(value(key), Some(expected), "{key}");
    }
}
