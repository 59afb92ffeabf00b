//! The Kubernetes manifests of `deploy/kubernetes/`, as shipped: every object against the
//! Kubernetes JSON schemas (`kubernetes-validate --strict`, from PyPI; `tests/run.sh` installs
//! it), what the schemas cannot say (the ServiceMonitor, a CRD; Pod Security "restricted"; the
//! shutdown timing; Redis sessions with more than one replica; the admin port behind a
//! NetworkPolicy), and every embedded config through `authgate check`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use common::{require, BIN};

/// Oldest version that runs the examples as written (native sidecars and the `sleep` preStop
/// action on by default) and the newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

/// Every manifest file, sorted.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(format!("{}/deploy/kubernetes", root()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "sidecar, gateway and redis manifests");
    files
}

/// The objects of one manifest file.
fn objects(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or_default()
}

/// The validator: installed by tests/run.sh in target/kube-venv, or on the PATH.
fn validator() -> String {
    let venv = format!("{}/target/kube-venv/bin/kubernetes-validate", root());
    if Path::new(&venv).is_file() {
        return venv;
    }
    require(
        "kubernetes-validate",
        "python3 -m venv target/kube-venv && target/kube-venv/bin/pip install kubernetes-validate",
    )
}

fn validate(files: &[PathBuf], version: &str) -> (bool, String) {
    let out = Command::new(validator())
        .args(["--strict", "-k", version])
        .args(files)
        .output()
        .expect("kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_manifest_passes_the_kubernetes_schemas_strictly() {
    let files = manifests();
    let (known, crds): (Vec<Value>, Vec<Value>) = files
        .iter()
        .flat_map(|f| objects(f))
        .partition(|o| !o["apiVersion"].as_str().unwrap().contains(".coreos.com/"));
    for version in KUBERNETES_VERSIONS {
        let (ok, text) = validate(&files, version);
        assert!(ok, "against {version}:\n{text}");
        let passed = text
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        assert_eq!(
            passed,
            known.len(),
            "every built-in object checked:\n{text}"
        );
        // The validator has no schema for a CRD: it may say so for those, nothing else.
        for line in text
            .lines()
            .filter(|l| !l.contains(" passed for resource "))
        {
            assert!(
                line.contains("Couldn't find schema for kind ServiceMonitor"),
                "unexpected: {line}"
            );
        }
        eprintln!(
            "Kubernetes {version}: {passed} objects valid (strict); {} ServiceMonitor(s) checked below, not by the schemas",
            crds.len()
        );
    }
    // The validator is strict: a misspelt field fails.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    std::fs::write(&bad, text.replacen("spec:", "spec:\n  bogusField: 1", 1)).unwrap();
    let (ok, text) = validate(&[bad], KUBERNETES_VERSIONS[1]);
    assert!(!ok && text.contains("bogusField"), "{text}");
}

/// The embedded `config.toml` of each ConfigMap, by ConfigMap name.
fn configs(objs: &[Value]) -> BTreeMap<String, String> {
    objs.iter()
        .filter(|o| kind(o) == "ConfigMap")
        .filter_map(|o| {
            let text = o["data"]["config.toml"].as_str()?;
            Some((name(o).to_string(), text.to_string()))
        })
        .collect()
}

/// Each Deployment with its pod spec and its config (the ConfigMap its pod mounts).
struct Workload {
    file: PathBuf,
    deployment: Value,
    config: Option<toml::Table>,
    config_text: Option<String>,
    objects: Vec<Value>,
}

impl Workload {
    fn pod(&self) -> &Value {
        &self.deployment["spec"]["template"]["spec"]
    }

    /// Every container, init (native sidecars) and main.
    fn containers(&self) -> Vec<&Value> {
        let pod = self.pod();
        let mut all: Vec<&Value> = Vec::new();
        for k in ["initContainers", "containers"] {
            if let Some(s) = pod[k].as_sequence() {
                all.extend(s.iter());
            }
        }
        all
    }

    /// The container that runs authgate (the one mounting the config).
    fn authgate(&self) -> &Value {
        self.containers()
            .into_iter()
            .find(|c| c["args"][0].as_str() == Some("run"))
            .unwrap_or_else(|| panic!("{}: no authgate container", name(&self.deployment)))
    }

    fn labels(&self) -> &Value {
        &self.deployment["spec"]["template"]["metadata"]["labels"]
    }

    fn selects(&self, selector: &Value) -> bool {
        selector.as_mapping().is_some_and(|m| {
            m.iter()
                .all(|(k, v)| self.labels()[k.as_str().unwrap()] == *v)
        })
    }
}

fn workloads() -> Vec<Workload> {
    let mut all = Vec::new();
    for file in manifests() {
        let objs = objects(&file);
        let configs = configs(&objs);
        for d in objs.iter().filter(|o| kind(o) == "Deployment") {
            let volumes = d["spec"]["template"]["spec"]["volumes"]
                .as_sequence()
                .cloned()
                .unwrap_or_default();
            let text = volumes
                .iter()
                .filter_map(|v| v["configMap"]["name"].as_str())
                .find_map(|n| configs.get(n).cloned());
            all.push(Workload {
                file: file.clone(),
                deployment: d.clone(),
                config: text.as_ref().map(|t| t.parse().unwrap()),
                config_text: text,
                objects: objs.clone(),
            });
        }
    }
    all
}

fn duration(config: &toml::Table, key: &str) -> Duration {
    let v = config["server"][key].as_str().unwrap();
    humantime::parse_duration(v).unwrap()
}

#[test]
fn the_sidecar_config_map_is_deploy_sidecar_toml_verbatim() {
    let objs = objects(Path::new(&format!(
        "{}/deploy/kubernetes/sidecar.yaml",
        root()
    )));
    let embedded = configs(&objs).remove("authgate-config").unwrap();
    let file = std::fs::read_to_string(format!("{}/deploy/sidecar.toml", root())).unwrap();
    assert_eq!(
        embedded, file,
        "the ConfigMap has drifted from deploy/sidecar.toml"
    );
}

#[test]
fn pods_meet_pod_security_restricted() {
    for w in workloads() {
        let pod = w.pod();
        let what = format!("{} {}", w.file.display(), name(&w.deployment));
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"],
            Value::Bool(true),
            "{what}"
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{what}"
        );
        assert_eq!(
            pod["automountServiceAccountToken"],
            Value::Bool(false),
            "{what}"
        );
        for c in w.containers() {
            let sc = &c["securityContext"];
            let what = format!("{what}: container {}", c["name"].as_str().unwrap());
            assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{what}");
            assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{what}");
            let drop: Vec<&str> = sc["capabilities"]["drop"]
                .as_sequence()
                .map(|s| s.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            assert_eq!(drop, ["ALL"], "{what}");
            assert!(sc["capabilities"]["add"].is_null(), "{what}");
            assert!(sc["privileged"].is_null() && sc["runAsUser"].as_u64() != Some(0));
        }
    }
}

#[test]
fn gateways_start_probed_share_redis_sessions_and_keep_secrets_in_secrets() {
    let ws: Vec<Workload> = workloads()
        .into_iter()
        .filter(|w| w.config.is_some())
        .collect();
    assert_eq!(ws.len(), 2, "the sidecar and the standalone gateway");
    for w in &ws {
        let config = w.config.as_ref().unwrap();
        let what = name(&w.deployment).to_string();
        let gw = w.authgate();
        assert!(
            gw["startupProbe"]["httpGet"].is_mapping(),
            "{what}: startupProbe"
        );
        assert_eq!(
            gw["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz")
        );
        // More than one replica (fixed, or an HPA's minimum): sessions in Redis with one
        // secret for all.
        let hpa = w.objects.iter().find(|o| {
            kind(o) == "HorizontalPodAutoscaler"
                && o["spec"]["scaleTargetRef"]["name"].as_str() == Some(name(&w.deployment))
        });
        let replicas = match hpa {
            Some(h) => {
                assert!(
                    w.deployment["spec"]["replicas"].is_null(),
                    "{what}: the HPA owns replicas"
                );
                h["spec"]["minReplicas"].as_u64().unwrap()
            }
            None => w.deployment["spec"]["replicas"].as_u64().unwrap_or(1),
        };
        if replicas > 1 {
            assert_eq!(config["session"]["store"].as_str(), Some("redis"), "{what}");
            assert!(config["session"].get("secret").is_some(), "{what}");
        }
        // At least one provider, and every secret of the config from the environment, which
        // takes it from a Secret.
        let providers = config["providers"].as_array().unwrap();
        assert!(!providers.is_empty(), "{what}: a provider");
        let env: BTreeMap<&str, &Value> = gw["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), &e["valueFrom"]["secretKeyRef"]))
            .collect();
        let secrets = providers
            .iter()
            .map(|p| p["client_secret"].as_str().unwrap())
            .chain(std::iter::once(
                config["session"]["secret"].as_str().unwrap(),
            ));
        for s in secrets {
            let var = s
                .strip_prefix("${")
                .and_then(|s| s.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{what}: a secret inline in the ConfigMap"));
            assert!(
                env.get(var).is_some_and(|r| r["name"].is_string()),
                "{what}: ${var} from a Secret"
            );
        }
        // Nobody trusted wholesale.
        for p in config["server"]["trusted_proxies"].as_array().unwrap() {
            let net: ipnet::IpNet = p.as_str().unwrap().parse().unwrap();
            assert!(
                net.prefix_len() >= 24,
                "{what}: trusted_proxies {net} is too wide"
            );
        }
        // A PodDisruptionBudget for these pods.
        assert!(
            w.objects.iter().any(|o| kind(o) == "PodDisruptionBudget"
                && w.selects(&o["spec"]["selector"]["matchLabels"])),
            "{what}: PodDisruptionBudget"
        );
    }
    // The sidecar is a native one: an init container that keeps running.
    let sidecar = ws
        .iter()
        .find(|w| name(&w.deployment) == "legacy-app")
        .unwrap();
    assert_eq!(
        sidecar.authgate()["restartPolicy"].as_str(),
        Some("Always"),
        "native sidecar"
    );
}

#[test]
fn the_shutdown_fits_the_termination_grace_and_matches_the_pre_stop() {
    for w in workloads().into_iter().filter(|w| w.config.is_some()) {
        let config = w.config.as_ref().unwrap();
        let what = name(&w.deployment).to_string();
        let delay = duration(config, "shutdown_delay");
        let gateway =
            delay + duration(config, "grace_period") + duration(config, "shutdown_timeout");
        let pre_stops: Vec<Duration> = w
            .containers()
            .iter()
            .filter_map(|c| c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64())
            .map(Duration::from_secs)
            .collect();
        // Every preStop sleep is the endpoint-removal window, as shutdown_delay is.
        for p in &pre_stops {
            assert_eq!(*p, delay, "{what}: preStop sleep and server.shutdown_delay");
        }
        assert!(delay >= Duration::from_secs(5), "{what}: shutdown_delay");
        let grace = Duration::from_secs(w.pod()["terminationGracePeriodSeconds"].as_u64().unwrap());
        // A native sidecar stops after the app: the app's preStop comes first.
        let native = w.authgate()["restartPolicy"].as_str() == Some("Always");
        let total = gateway
            + if native {
                pre_stops.iter().sum()
            } else {
                Duration::ZERO
            };
        assert!(
            total < grace,
            "{what}: {total:?} of shutdown with {grace:?} of termination grace"
        );
        if native {
            assert!(
                !pre_stops.is_empty(),
                "{what}: the app holds on with a preStop sleep"
            );
        }
    }
}

#[test]
fn the_admin_port_is_behind_a_network_policy_and_scraped_by_a_service_monitor() {
    for w in workloads().into_iter().filter(|w| w.config.is_some()) {
        let config = w.config.as_ref().unwrap();
        let what = name(&w.deployment).to_string();
        let admin: std::net::SocketAddr = config["admin"]["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let port = w.authgate()["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some("admin"))
            .unwrap_or_else(|| panic!("{what}: a port named admin"));
        assert_eq!(
            port["containerPort"].as_u64(),
            Some(u64::from(admin.port()))
        );
        // NetworkPolicy: the admin port only from somewhere named, never open.
        let policies: Vec<&Value> = w
            .objects
            .iter()
            .filter(|o| {
                kind(o) == "NetworkPolicy" && w.selects(&o["spec"]["podSelector"]["matchLabels"])
            })
            .collect();
        assert!(!policies.is_empty(), "{what}: a NetworkPolicy");
        for p in &policies {
            for rule in p["spec"]["ingress"].as_sequence().unwrap() {
                let ports: Vec<&str> = rule["ports"]
                    .as_sequence()
                    .map(|s| s.iter().filter_map(|p| p["port"].as_str()).collect())
                    .unwrap_or_default();
                assert!(!ports.is_empty(), "{what}: a rule for every port");
                if ports.contains(&"admin") {
                    assert!(rule["from"].is_sequence(), "{what}: admin open to all");
                }
            }
        }
        // ServiceMonitor (a CRD, no schema above): it selects one Service of these pods whose
        // named port reaches the admin port, on /metrics.
        let monitor = w
            .objects
            .iter()
            .find(|o| kind(o) == "ServiceMonitor")
            .unwrap_or_else(|| panic!("{what}: a ServiceMonitor"));
        assert_eq!(
            monitor["apiVersion"].as_str(),
            Some("monitoring.coreos.com/v1")
        );
        let wanted = &monitor["spec"]["selector"]["matchLabels"];
        let services: Vec<&Value> = w
            .objects
            .iter()
            .filter(|o| {
                kind(o) == "Service"
                    && wanted
                        .as_mapping()
                        .unwrap()
                        .iter()
                        .all(|(k, v)| o["metadata"]["labels"][k.as_str().unwrap()] == *v)
            })
            .collect();
        assert_eq!(
            services.len(),
            1,
            "{what}: the ServiceMonitor selects one Service"
        );
        let svc = services[0];
        assert!(w.selects(&svc["spec"]["selector"]), "{what}: of these pods");
        for e in monitor["spec"]["endpoints"].as_sequence().unwrap() {
            assert_eq!(e["path"].as_str(), Some("/metrics"));
            let sp = svc["spec"]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|p| p["name"] == e["port"])
                .unwrap_or_else(|| panic!("{what}: the Service names the monitored port"));
            assert_eq!(sp["targetPort"].as_str(), Some("admin"), "{what}");
        }
    }
}

#[test]
fn every_embedded_config_passes_authgate_check() {
    for w in workloads().into_iter().filter(|w| w.config.is_some()) {
        let what = name(&w.deployment).to_string();
        let dir = tempfile::tempdir().unwrap();
        let text = w.config_text.clone().unwrap();
        let gw = w.authgate();
        // The pod's environment from its Secrets: stand-in values of a valid length.
        let env: Vec<(String, String)> = gw["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_string(), "s".repeat(48)))
            .collect();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &text).unwrap();
        // Offline: the cluster's DNS names and Secret volumes are not on this machine; the
        // pod's environment variables are given stand-in values of a valid length.
        let out = Command::new(BIN)
            .args(["check", "--offline"])
            .arg(&path)
            .envs(env)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{what} ({}): check failed:\n{stdout}{}",
            w.file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{what}: {}", stdout.lines().next().unwrap_or_default());
    }
}
