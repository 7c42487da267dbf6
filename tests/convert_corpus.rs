//! `spinscale convert` on a corpus of real-shaped inputs (`tests/convert-corpus/`), one folder per
//! pattern: the binary's stdout, stderr and exit code must equal the goldens beside the input
//! (`stdout.yaml`, `stderr.txt`, `exit-code`). Every object of a successful conversion is read
//! into k8s-openapi types or this project's own, every converted trigger is read by spinscale's
//! parser and names a connection of the config skeleton, the skeleton's Deployment patch mounts
//! every file the connections name, and converting the output again changes nothing.
//!
//! Updating the goldens is a deliberate act: `SPINSCALE_UPDATE_GOLDENS=1 cargo test -p spinscale
//! --test convert_corpus` rewrites them from what the binary prints; review the diff before
//! committing it.

mod manifests;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use manifests::{ScaledObject, SpinApp};
use serde::Deserialize;
use spinscale_core::spec::TargetSpec;
use spinscale_core::spec::kafka_connection::KafkaConnection;
use spinscale_core::spec::prometheus_connection::PrometheusConnection;

const UPDATE: &str = "SPINSCALE_UPDATE_GOLDENS";
/// The stderr line after which the config skeleton follows.
const SKELETON_INTRO: &str = "(--config-out FILE writes them to a file):\n";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/convert-corpus")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("tests/convert-corpus exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.join("input.yaml").is_file())
        .collect();
    cases.sort();
    cases
}

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

/// `spinscale convert ARGS -` with `input` on stdin (so messages name `<stdin>`, not a path).
fn convert(args: &[String], input: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spinscale"))
        .arg("convert")
        .args(args)
        .arg("-")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spinscale starts");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("stdin written");
    let out = child.wait_with_output().expect("spinscale ends");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8 output");
    Run { stdout: text(out.stdout), stderr: text(out.stderr), code: out.status.code().expect("an exit code") }
}

fn args_of(case: &Path) -> Vec<String> {
    std::fs::read_to_string(case.join("args"))
        .map(|a| a.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with {UPDATE}=1 to write it)", path.display()))
}

/// Where `actual` first differs from `expected`, for the failure message.
fn first_difference(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let at = e.iter().zip(&a).position(|(x, y)| x != y).unwrap_or(e.len().min(a.len()));
    format!(
        "line {}:\n  expected: {:?}\n  actual:   {:?}",
        at + 1,
        e.get(at).copied().unwrap_or("<end>"),
        a.get(at).copied().unwrap_or("<end>")
    )
}

#[test]
fn every_corpus_case_prints_its_goldens() {
    let update = std::env::var(UPDATE).is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let cases = cases();
    assert!(cases.len() >= 15, "the corpus has a case per pattern: {cases:?}");
    for case in &cases {
        let name = case.file_name().and_then(|n| n.to_str()).expect("a UTF-8 name").to_string();
        let run = convert(&args_of(case), &read(&case.join("input.yaml")));
        let files = [
            ("stdout.yaml", run.stdout.clone()),
            ("stderr.txt", run.stderr.clone()),
            ("exit-code", format!("{}\n", run.code)),
        ];
        for (file, actual) in files {
            let path = case.join(file);
            if update {
                std::fs::write(&path, &actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                continue;
            }
            let expected = read(&path);
            if expected != actual {
                failures.push(format!("{name}/{file}: {}", first_difference(&expected, &actual)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden file(s) differ; if the change is intended, rerun with {UPDATE}=1 and review the diff:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_case_refused_prints_one_error_naming_the_document_and_nothing_on_stdout() {
    for case in cases() {
        let code = read(&case.join("exit-code"));
        if code.trim() == "0" {
            continue;
        }
        let stdout = read(&case.join("stdout.yaml"));
        let stderr = read(&case.join("stderr.txt"));
        assert!(stdout.is_empty(), "{}: output despite the refusal", case.display());
        assert_eq!(stderr.lines().count(), 1, "{}: {stderr}", case.display());
        assert!(stderr.starts_with("Error: <stdin>: document "), "{}: {stderr}", case.display());
    }
}

#[test]
fn converting_a_corpus_output_again_changes_nothing() {
    for case in cases() {
        let args = args_of(&case);
        let once = convert(&args, &read(&case.join("input.yaml")));
        if once.code != 0 {
            continue;
        }
        let twice = convert(&args, &once.stdout);
        assert_eq!(twice.code, 0, "{}: {}", case.display(), twice.stderr);
        assert!(twice.stdout == once.stdout, "{}: {}", case.display(), first_difference(&once.stdout, &twice.stdout));
    }
}

// === every object of the output, typed ===

/// KEDA's TriggerAuthentication and ClusterTriggerAuthentication, the fields the corpus uses.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // read for its shape: an unknown or misspelt field fails
struct TriggerAuthentication {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: TriggerAuthenticationSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // read for its shape: an unknown or misspelt field fails
struct TriggerAuthenticationSpec {
    secret_target_ref: Option<Vec<TargetRef>>,
    config_map_target_ref: Option<Vec<TargetRef>>,
    pod_identity: Option<BTreeMap<String, String>>,
    hashi_corp_vault: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read for its shape: an unknown or misspelt field fails
struct TargetRef {
    parameter: String,
    name: String,
    key: String,
}

/// Objects spinscale passes through without converting them: a ScaledJob, KEDA v1 objects.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // read for its shape: an unknown or misspelt field fails
struct PassedThrough {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: serde_json::Value,
}

/// Reads one object of the output into its type; `status` is the cluster's and is left aside.
fn typed(doc: &serde_json::Value, origin: &str) {
    let mut object = doc.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    let (api, kind) = manifests::type_of(&object);
    match (api, kind) {
        ("v1", "List") => {
            for (i, item) in object["items"].as_array().expect("items").iter().enumerate() {
                typed(item, &format!("{origin} items[{i}]"));
            }
        }
        ("core.spinkube.dev/v1alpha1", "SpinApp") => drop(manifests::typed::<SpinApp>(&object, origin)),
        ("keda.sh/v1alpha1", "ScaledObject") => drop(manifests::typed::<ScaledObject>(&object, origin)),
        ("keda.sh/v1alpha1", "TriggerAuthentication" | "ClusterTriggerAuthentication") => {
            drop(manifests::typed::<TriggerAuthentication>(&object, origin));
        }
        ("keda.sh/v1alpha1", "ScaledJob") | ("keda.k8s.io/v1alpha1", _) => {
            drop(manifests::typed::<PassedThrough>(&object, origin));
        }
        ("v1", "Secret") => drop(manifests::round_trip::<Secret>(&object, origin)),
        ("v1", "Service") => drop(manifests::round_trip::<Service>(&object, origin)),
        ("v1", "ConfigMap") => drop(manifests::round_trip::<ConfigMap>(&object, origin)),
        ("apps/v1", "Deployment") => drop(manifests::round_trip::<Deployment>(&object, origin)),
        ("networking.k8s.io/v1", "Ingress") => drop(manifests::round_trip::<Ingress>(&object, origin)),
        ("networking.k8s.io/v1", "IngressClass") => drop(manifests::round_trip::<IngressClass>(&object, origin)),
        other => panic!("{origin}: no type for {other:?}: add one to tests/convert_corpus.rs"),
    }
}

/// The ScaledObjects of the output, List items included.
fn scaled_objects(docs: &[serde_json::Value]) -> Vec<ScaledObject> {
    let mut all = Vec::new();
    for doc in docs {
        match manifests::type_of(doc) {
            ("v1", "List") => all.extend(scaled_objects(doc["items"].as_array().expect("items"))),
            ("keda.sh/v1alpha1", "ScaledObject") => {
                let mut object = doc.clone();
                object.as_object_mut().expect("an object").remove("status");
                all.push(manifests::typed(&object, "ScaledObject"));
            }
            _ => {}
        }
    }
    all
}

/// The config part of the skeleton: nothing but connections.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Connections {
    #[serde(default)]
    prometheus_connections: BTreeMap<String, PrometheusConnection>,
    #[serde(default)]
    kafka_connections: BTreeMap<String, KafkaConnection>,
}

/// The files of a Kafka connection.
fn kafka_files(c: &KafkaConnection) -> Vec<String> {
    [&c.username_file, &c.password_file, &c.ca_file, &c.cert_file, &c.key_file]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect()
}

/// Every file the pod of the patch has: `mountPath/path` of projected items, and any file under
/// an `emptyDir` mount (written there by a sidecar).
fn mounted_files(pod: &PodSpec) -> (BTreeSet<String>, Vec<String>) {
    let volumes = pod.volumes.clone().unwrap_or_default();
    let mut files = BTreeSet::new();
    let mut writable_dirs = Vec::new();
    for mount in pod.containers[0].volume_mounts.iter().flatten() {
        let volume = volumes.iter().find(|v| v.name == mount.name).expect("every mount has its volume");
        if volume.empty_dir.is_some() {
            writable_dirs.push(mount.mount_path.clone());
        }
        for source in volume.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            let items = source.secret.as_ref().and_then(|s| s.items.clone()).into_iter().flatten();
            let items = items.chain(source.config_map.as_ref().and_then(|c| c.items.clone()).into_iter().flatten());
            files.extend(items.map(|i| format!("{}/{}", mount.mount_path, i.path)));
        }
    }
    (files, writable_dirs)
}

/// The config skeleton on stderr: the connections and the Deployment patch's pod.
fn skeleton(stderr: &str, origin: &str) -> Option<(Connections, Option<PodSpec>)> {
    let at = stderr.find(SKELETON_INTRO)? + SKELETON_INTRO.len();
    let docs = manifests::documents(&stderr[at..], origin);
    let connections: Connections = manifests::typed(&docs[0], origin);
    let pod = docs.get(1).map(|patch| {
        let template = &patch["spec"]["template"];
        if let Some(metadata) = template.get("metadata") {
            manifests::round_trip::<ObjectMeta>(metadata, origin);
        }
        assert_eq!(
            patch.as_object().map(serde_json::Map::len),
            Some(1),
            "{origin}: the patch holds spec.template only"
        );
        manifests::round_trip::<PodSpec>(&template["spec"], origin)
    });
    Some((connections, pod))
}

#[test]
fn every_object_and_connection_of_the_corpus_output_parses_and_fits_together() {
    for case in cases() {
        let origin = case.display().to_string();
        let stdout = read(&case.join("stdout.yaml"));
        if read(&case.join("exit-code")).trim() != "0" {
            continue;
        }
        let docs = manifests::documents(&stdout, &origin);
        for (i, doc) in docs.iter().enumerate() {
            typed(doc, &format!("{origin}: document {}", i + 1));
        }
        let stderr = read(&case.join("stderr.txt"));
        let skeleton = skeleton(&stderr, &origin);
        // Output converted before names its connections already; its skeleton came with that conversion.
        let converting = read(&case.join("input.yaml")).contains("authenticationRef:");
        for scaled in scaled_objects(&docs) {
            for trigger in scaled.spec.triggers.iter().filter(|t| t.type_ == "external-push") {
                let metadata = trigger.metadata.clone().into_iter().collect();
                let spec = TargetSpec::parse(&metadata, &BTreeMap::new()).unwrap_or_else(|e| panic!("{origin}: {e}"));
                assert!(spec.warnings.is_empty(), "{origin}: {:?}", spec.warnings);
                if !converting {
                    continue;
                }
                let connections = skeleton.as_ref().map(|(c, _)| c);
                if let Some(name) = trigger.metadata.get("prometheusConnection") {
                    assert!(
                        connections.is_some_and(|c| c.prometheus_connections.contains_key(name)),
                        "{origin}: {name}"
                    );
                }
                if let Some(name) = trigger.metadata.get("kafkaConnection") {
                    assert!(connections.is_some_and(|c| c.kafka_connections.contains_key(name)), "{origin}: {name}");
                }
            }
        }
        let Some((connections, pod)) = skeleton else { continue };
        let (files, writable) = pod.as_ref().map(mounted_files).unwrap_or_default();
        // spinscale's own checks find nothing wrong but the files, which exist only in its pod.
        let mut named = Vec::new();
        for (name, c) in &connections.prometheus_connections {
            assert!(c.problems(name).iter().all(|p| p.contains("No such file")), "{origin}: {:?}", c.problems(name));
            named.extend(c.files().into_iter().map(|(_, path)| path.display().to_string()));
        }
        for (name, c) in &connections.kafka_connections {
            assert!(c.problems(name).iter().all(|p| p.contains("No such file")), "{origin}: {:?}", c.problems(name));
            named.extend(kafka_files(c));
        }
        for file in named {
            let from_sidecar = writable.iter().any(|dir| file.starts_with(&format!("{dir}/")));
            assert!(files.contains(&file) || from_sidecar, "{origin}: {file} is not mounted by the patch: {files:?}");
        }
    }
}

#[test]
fn config_out_writes_the_skeleton_to_a_file_instead_of_stderr() {
    let case = corpus().join("kafka-sasl-tls");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("spinscale-connections.yaml");
    let args = vec!["--config-out".to_string(), file.display().to_string()];
    let run = convert(&args, &read(&case.join("input.yaml")));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, read(&case.join("stdout.yaml")));
    let golden = read(&case.join("stderr.txt"));
    let intro = golden.find(SKELETON_INTRO).expect("a skeleton");
    assert_eq!(std::fs::read_to_string(&file).expect("written"), &golden[intro + SKELETON_INTRO.len()..]);
    let notes = &golden[..golden[..intro].rfind('\n').map_or(0, |i| i + 1)];
    assert!(run.stderr.starts_with(notes), "{}", run.stderr);
    assert!(run.stderr.ends_with(&format!("are in {}\n", file.display())), "{}", run.stderr);
}
