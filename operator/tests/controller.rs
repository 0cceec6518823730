//! The controllers against a mocked API server (tower-test, as kube-rs's controller-rs does):
//! every request a reconcile makes is checked for method, path and query, and server-side
//! apply bodies (field manager and force are in the query) for their content; the mock
//! answers as the apiserver would. A reconcile that makes a request the scenario does not
//! expect, or misses one, fails the test.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use common::{fleet, media_app, stream_auth, NOW, NS, TEAM};
use ferrocast_operator::controller::{error_policy_media_app, reconcile_media_app, reconcile_stream_auth, Context};
use ferrocast_operator::crd::{MediaApp, MediaAppStatus, StreamAuth};
use ferrocast_operator::metrics::Metrics;
use ferrocast_server::config::Config;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One expected request: method, URI (path and query), and a responder that checks the
/// JSON body and returns (status, response body).
struct Expect {
    method: &'static str,
    uri: String,
    respond: Box<dyn FnOnce(Value) -> (u16, Value) + Send>,
}

fn expect(
    method: &'static str,
    uri: impl Into<String>,
    respond: impl FnOnce(Value) -> (u16, Value) + Send + 'static,
) -> Expect {
    Expect {
        method,
        uri: uri.into(),
        respond: Box::new(respond),
    }
}

fn not_found(what: &str) -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("{what} not found"), "reason": "NotFound", "code": 404}),
    )
}

/// Answers the scenario's requests in order; a responder's failed assertion fails the test.
/// Once `stop` fires (the reconcile is done), reports expected requests that never came and
/// requests nobody expected (those are answered with 500 so the reconcile cannot hang).
fn serve(
    mut handle: Handle,
    scenario: Vec<Expect>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        for (i, e) in scenario.into_iter().enumerate() {
            let next = tokio::select! {
                r = handle.next_request() => r,
                _ = &mut stop => return Err(format!("request {i} never came: expected {} {}", e.method, e.uri)),
            };
            let Some((request, send)) = next else {
                return Err(format!("client gone before request {i}: {} {}", e.method, e.uri));
            };
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            assert_eq!(
                (method.as_str(), uri.as_str()),
                (e.method, e.uri.as_str()),
                "request {i}"
            );
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("JSON body")
            };
            let (status, reply) = (e.respond)(body);
            let response = Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(response);
        }
        let mut unexpected = Vec::new();
        loop {
            tokio::select! {
                r = handle.next_request() => match r {
                    Some((request, send)) => {
                        unexpected.push(format!("{} {}", request.method(), request.uri()));
                        send.send_response(Response::builder().status(500).body(Body::from(Vec::new())).unwrap());
                    }
                    None => break,
                },
                _ = &mut stop => break,
            }
        }
        if unexpected.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected requests: {unexpected:?}"))
        }
    })
}

/// Runs `f` (a reconcile) against the scenario; returns its result after checking that every
/// expected request came and no other.
async fn run<T>(handle: Handle, scenario: Vec<Expect>, f: impl std::future::Future<Output = T>) -> T {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let server = serve(handle, scenario, stop_rx);
    let out = f.await;
    let _ = stop_tx.send(());
    if let Err(e) = server.await.expect("the mock API server panicked (see above)") {
        panic!("{e}");
    }
    out
}

/// A watch cache holding `objects`, listed once (as after the watcher's initial list).
fn cache<K>(objects: Vec<K>) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

/// A Context on a mocked client, with the caches holding `media_apps`, `stream_auths` and
/// `secrets` (Secrets are read from the cache, never fetched one by one).
fn context_with(
    media_apps: Vec<MediaApp>,
    stream_auths: Vec<StreamAuth>,
    secrets: Vec<k8s_openapi::api::core::v1::Secret>,
) -> (Arc<Context>, Handle, Metrics) {
    context_for(fleet(), media_apps, stream_auths, secrets)
}

/// [`context_with`] for `fleet`.
fn context_for(
    fleet: ferrocast_operator::render::Fleet,
    media_apps: Vec<MediaApp>,
    stream_auths: Vec<StreamAuth>,
    secrets: Vec<k8s_openapi::api::core::v1::Secret>,
) -> (Arc<Context>, Handle, Metrics) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let metrics = Metrics::new();
    // The fleet Secret as a previous sync left it: the revision salt is kept from there.
    let mut secrets = secrets;
    secrets.push(common::secret(
        "ferrocast-server-secrets",
        &[("config.revision-salt", common::REVISION_SALT)],
    ));
    let mut ctx = Context::new(
        client,
        fleet,
        cache(media_apps),
        cache(stream_auths),
        cache(secrets),
        metrics.clone(),
        "operator-0",
    );
    ctx.clock = || NOW;
    (Arc::new(ctx), handle, metrics)
}

fn context(media_apps: Vec<MediaApp>, stream_auths: Vec<StreamAuth>) -> (Arc<Context>, Handle, Metrics) {
    context_with(media_apps, stream_auths, vec![])
}

/// The stream keys Secret of STUDIO, as the cache holds it.
fn keys_secret() -> k8s_openapi::api::core::v1::Secret {
    serde_json::from_value(keys_secret_json()).unwrap()
}

const APPLY: &str = "?&force=true&fieldManager=ferrocast-operator";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn keys_secret_json() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "studio-keys", "namespace": NS}, "data": {"cam1": b64("k-cam1-SECRET")}})
}

/// The config inside an applied ConfigMap body, as the server reads it.
fn config_of(body: &Value) -> Config {
    Config::from_yaml(body["data"]["ferrocast.yaml"].as_str().expect("config key"), "applied")
        .expect("valid server config")
}

fn applied_configmap(check: impl FnOnce(&Config) + Send + 'static) -> Expect {
    expect(
        "PATCH",
        format!("/api/v1/namespaces/{NS}/configmaps/ferrocast-server-config{APPLY}"),
        move |body| {
            assert_eq!(
                (body["apiVersion"].as_str(), body["kind"].as_str()),
                (Some("v1"), Some("ConfigMap")),
                "server-side apply names its type"
            );
            assert_eq!(
                body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "ferrocast-operator"
            );
            check(&config_of(&body));
            (200, body)
        },
    )
}

fn applied_secret(check: impl FnOnce(&BTreeMap<String, String>) + Send + 'static) -> Expect {
    expect(
        "PATCH",
        format!("/api/v1/namespaces/{NS}/secrets/ferrocast-server-secrets{APPLY}"),
        move |body| {
            assert_eq!(
                (body["kind"].as_str(), body["type"].as_str()),
                (Some("Secret"), Some("Opaque"))
            );
            let data: BTreeMap<String, String> = body["data"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                String::from_utf8(
                                    base64::engine::general_purpose::STANDARD
                                        .decode(v.as_str().unwrap())
                                        .unwrap(),
                                )
                                .unwrap(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            check(&data);
            (200, body)
        },
    )
}

fn pruning(services: Vec<Value>, generated: Vec<Value>) -> Vec<Expect> {
    vec![
        expect(
            "GET",
            format!("/api/v1/namespaces/{NS}/services?&labelSelector=app.kubernetes.io%2Fmanaged-by%3Dferrocast-operator%2Cferrocast.io%2Ffleet%3Dferrocast%2Cferrocast.io%2Fmediaapp"),
            move |_| (200, json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": services})),
        ),
        expect(
            "GET",
            format!("/api/v1/namespaces/{NS}/secrets?&labelSelector=app.kubernetes.io%2Fmanaged-by%3Dferrocast-operator%2Cferrocast.io%2Ffleet%3Dferrocast%2Cferrocast.io%2Fgenerated-certificate"),
            move |_| (200, json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": generated})),
        ),
    ]
}

/// The Service looked up before it is applied (absent: a create).
fn service_lookup(name: &str, existing: Option<Value>) -> Expect {
    expect(
        "GET",
        format!("/api/v1/namespaces/{NS}/services/{name}"),
        move |_| match existing {
            Some(v) => (200, v),
            None => not_found("services"),
        },
    )
}

/// The Service apply; the answer carries a load balancer address when `lb_ip` is set.
fn applied_service(name: &str, lb_ip: Option<&'static str>, check: impl FnOnce(&Value) + Send + 'static) -> Expect {
    expect(
        "PATCH",
        format!("/api/v1/namespaces/{NS}/services/{name}{APPLY}"),
        move |mut body| {
            assert_eq!(body["kind"], "Service");
            check(&body);
            if let Some(ip) = lb_ip {
                body["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
            }
            (200, body)
        },
    )
}

fn event(reason: &'static str, regarding: &'static str) -> Expect {
    expect(
        "POST",
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events?"),
        move |body| {
            assert_eq!(body["reason"], reason, "event {body}");
            assert_eq!(body["regarding"]["name"], regarding);
            assert_eq!(body["reportingController"], "ferrocast-operator");
            (201, body)
        },
    )
}

fn status_patch(name: &str, check: impl FnOnce(&MediaAppStatus) + Send + 'static) -> Expect {
    let n = name.to_string();
    expect(
        "PATCH",
        format!("/apis/ferrocast.io/v1alpha1/namespaces/{NS}/mediaapps/{name}/status{APPLY}"),
        move |body| {
            assert_eq!(
                (body["apiVersion"].as_str(), body["kind"].as_str()),
                (Some("ferrocast.io/v1alpha1"), Some("MediaApp"))
            );
            assert!(body.get("spec").is_none(), "a status apply carries only the status");
            let status: MediaAppStatus = serde_json::from_value(body["status"].clone()).expect("a MediaApp status");
            check(&status);
            (
                200,
                json!({"apiVersion": "ferrocast.io/v1alpha1", "kind": "MediaApp", "metadata": {"name": n, "namespace": NS}, "spec": {}, "status": body["status"]}),
            )
        },
    )
}

/// The revision the render gives these inputs (what the pods must run for Ready).
fn revision_of(
    media_apps: Vec<MediaApp>,
    stream_auths: Vec<StreamAuth>,
    secrets: Vec<k8s_openapi::api::core::v1::Secret>,
) -> String {
    let mut i = common::inputs(media_apps, stream_auths, secrets);
    i.api_token_key = None;
    ferrocast_operator::render::render(&fleet(), &i).unwrap().revision
}

/// The last poll found these ready server pods running these revisions.
fn pods_run(ctx: &Context, pods: &[(&str, &str)]) {
    let live = ferrocast_operator::fleet::Live {
        pods: pods
            .iter()
            .map(|(pod, revision)| {
                (
                    pod.to_string(),
                    Some(ferrocast_operator::fleet::PodConfig {
                        revision: revision.to_string(),
                        pending: false,
                        tls: ferrocast_operator::fleet::TlsListening::BOTH,
                    }),
                )
            })
            .collect(),
        ..Default::default()
    };
    *ctx.live.write().unwrap() = Some(live);
}

fn condition<'a>(s: &'a MediaAppStatus, type_: &str) -> &'a ferrocast_operator::crd::Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {s:?}"))
}

/// A resource's YAML (`metadata: {name: ...` first) placed in namespace [`TEAM`].
fn in_team(yaml: &str) -> String {
    yaml.replacen("metadata: {", "metadata: {namespace: team-a, ", 1)
}

const LIVE: &str =
    "metadata: {name: live}\nspec: {publish: {auth: key, authRef: {name: studio}}, service: {type: LoadBalancer}}";
const STUDIO: &str = "metadata: {name: studio}\nspec: {keys: {secretRef: {name: studio-keys}}}";

#[tokio::test]
async fn create_applies_config_secret_service_then_reports_ready() {
    let ma = media_app(LIVE, 10);
    let (ctx, handle, metrics) = context_with(vec![ma.clone()], vec![stream_auth(STUDIO)], vec![keys_secret()]);
    let revision = revision_of(vec![ma.clone()], vec![stream_auth(STUDIO)], vec![keys_secret()]);
    pods_run(&ctx, &[("server-0", &revision), ("server-1", &revision)]);
    let want_revision = revision.clone();
    let mut scenario = vec![
        // The Secret before the ConfigMap that names its files.
        applied_secret(move |data| {
            assert_eq!(
                data.keys().collect::<Vec<_>>(),
                ["config.revision", "config.revision-salt", "streamauth.studio.keys.yaml"]
            );
            assert_eq!(data["streamauth.studio.keys.yaml"], "cam1: k-cam1-SECRET\n");
            assert_eq!(data["config.revision"], want_revision);
            assert_eq!(data["config.revision-salt"], common::REVISION_SALT, "the salt is kept");
        }),
        applied_configmap(move |c| {
            assert_eq!(c.apps.len(), 1);
            assert_eq!(c.apps[0].name, "live");
            assert_eq!(
                c.apps[0].publish.keys_file.as_ref().unwrap().to_str(),
                Some("/etc/ferrocast/secrets/streamauth.studio.keys.yaml")
            );
            assert_eq!(c.revision.id.as_deref(), Some(revision.as_str()));
            assert_eq!(
                c.revision.file.as_ref().unwrap().to_str(),
                Some("/etc/ferrocast/secrets/config.revision")
            );
        }),
    ];
    scenario.extend(pruning(vec![], vec![]));
    scenario.push(service_lookup("ferrocast-live", None));
    scenario.push(applied_service("ferrocast-live", Some("203.0.113.7"), |svc| {
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert_eq!(svc["spec"]["selector"]["app.kubernetes.io/component"], "server");
        assert_eq!(svc["metadata"]["ownerReferences"][0]["uid"], "uid-live");
        assert_eq!(svc["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(svc["metadata"]["labels"]["ferrocast.io/mediaapp"], "live");
    }));
    scenario.push(event("Ready", "live"));
    scenario.push(status_patch("live", |s| {
        let ready = condition(s, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Reconciled"));
        let applied = condition(s, "ConfigApplied");
        assert_eq!(applied.status, "True");
        assert!(
            applied.message.contains("all 2 ready server pods"),
            "{}",
            applied.message
        );
        assert_eq!(s.endpoints.as_ref().unwrap().rtmp, "rtmp://203.0.113.7:1935/live");
        assert_eq!(s.service.as_deref(), Some("ferrocast-live"));
        assert_eq!(
            (s.live_streams, s.sessions.as_ref()),
            (None, None),
            "live counts are not the reconcile's"
        );
    }));
    let action = run(handle, scenario, reconcile_media_app(Arc::new(ma), ctx))
        .await
        .expect("reconcile");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(300))
    );
    let text = metrics.render();
    assert!(
        text.contains(r#"ferrocast_operator_reconciliations_total{kind="MediaApp",result="success"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ferrocast_operator_mediaapp_ready{mediaapp="live"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ferrocast_operator_managed_objects{kind="Service"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn update_reapplies_with_the_new_spec_and_patches_status_without_an_event() {
    let mut ma = media_app("metadata: {name: live, generation: 2}\nspec: {gopCache: false, publish: {auth: key, authRef: {name: studio}}, service: {type: LoadBalancer}}", 10);
    // Status as written for generation 1, Ready: an update keeps Ready, so no new event.
    ma.status = Some(MediaAppStatus {
        observed_generation: Some(1),
        conditions: vec![ferrocast_operator::crd::Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Reconciled".into(),
            message: String::new(),
            last_transition_time: "2027-01-01T00:00:00Z".into(),
            observed_generation: Some(1),
        }],
        app: Some("live".into()),
        service: Some("ferrocast-live".into()),
        ..Default::default()
    });
    let (ctx, handle, _) = context_with(vec![ma.clone()], vec![stream_auth(STUDIO)], vec![keys_secret()]);
    let revision = revision_of(vec![ma.clone()], vec![stream_auth(STUDIO)], vec![keys_secret()]);
    pods_run(&ctx, &[("server-0", &revision)]);
    let mut scenario = vec![
        applied_secret(|_| {}),
        applied_configmap(|c| assert!(!c.apps[0].gop_cache, "the updated spec")),
    ];
    scenario.extend(pruning(vec![], vec![]));
    scenario.push(service_lookup("ferrocast-live", Some(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ferrocast-live", "namespace": NS, "labels": {"ferrocast.io/mediaapp": "live"}}}))));
    scenario.push(applied_service("ferrocast-live", Some("203.0.113.7"), |_| {}));
    scenario.push(status_patch("live", |s| {
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.conditions[0].observed_generation, Some(2));
        assert_eq!(
            s.conditions[0].last_transition_time, "2027-01-01T00:00:00Z",
            "still Ready: the transition time stays"
        );
    }));
    run(handle, scenario, reconcile_media_app(Arc::new(ma), ctx))
        .await
        .expect("reconcile");
}

#[tokio::test]
async fn missing_secret_fails_closed_and_reports_why() {
    let ma = media_app(LIVE, 10);
    let (ctx, handle, metrics) = context(vec![ma.clone()], vec![stream_auth(STUDIO)]);
    let mut scenario = vec![
        applied_secret(|data| {
            assert_eq!(
                data.keys().collect::<Vec<_>>(),
                ["config.revision", "config.revision-salt"]
            )
        }),
        applied_configmap(|c| assert!(c.apps.is_empty(), "an app without its keys is not served")),
    ];
    scenario.extend(pruning(vec![], vec![]));
    // The Service stays: a credentials problem must not give up the load balancer address.
    scenario.push(service_lookup("ferrocast-live", None));
    scenario.push(applied_service("ferrocast-live", Some("203.0.113.7"), |_| {}));
    scenario.push(expect(
        "POST",
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events?"),
        |body| {
            assert_eq!(
                (body["type"].as_str(), body["reason"].as_str()),
                (Some("Warning"), Some("SecretNotFound"))
            );
            assert!(body["note"].as_str().unwrap().contains("Secret studio-keys not found"));
            (201, body)
        },
    ));
    scenario.push(status_patch("live", |s| {
        let ready = condition(s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SecretNotFound")
        );
        assert_eq!(s.endpoints, None, "not served: no endpoints advertised");
    }));
    run(handle, scenario, reconcile_media_app(Arc::new(ma), ctx))
        .await
        .expect("reconcile");
    assert!(metrics
        .render()
        .contains(r#"ferrocast_operator_reconcile_errors_total{kind="MediaApp",reason="SecretNotFound"} 1"#));
}

#[tokio::test]
async fn a_foreign_service_with_the_same_name_is_never_taken_over() {
    let ma = media_app("metadata: {name: live}\nspec: {service: {type: LoadBalancer}}", 10);
    let (ctx, handle, _) = context(vec![ma.clone()], vec![]);
    let mut scenario = vec![
        applied_secret(|_| {}),
        applied_configmap(|c| assert_eq!(c.apps.len(), 1)),
    ];
    scenario.extend(pruning(vec![], vec![]));
    // Someone else's Service (no ferrocast.io/mediaapp label): looked at, not applied.
    scenario.push(service_lookup("ferrocast-live", Some(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ferrocast-live", "namespace": NS, "labels": {"app": "other"}}}))));
    scenario.push(expect(
        "POST",
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events?"),
        |body| {
            assert_eq!(
                (body["type"].as_str(), body["reason"].as_str()),
                (Some("Warning"), Some("ServiceConflict"))
            );
            (201, body)
        },
    ));
    scenario.push(status_patch("live", |s| {
        assert_eq!(condition(s, "Ready").reason, "ServiceConflict");
        assert_eq!(s.endpoints, None);
    }));
    run(handle, scenario, reconcile_media_app(Arc::new(ma), ctx))
        .await
        .expect("reconcile");
}

#[tokio::test]
async fn deletion_rerenders_the_fleet_and_prunes_what_the_mediaapp_owned() {
    // `live` was deleted: the caches no longer hold it; `vod` remains.
    let vod = media_app("metadata: {name: vod}\nspec: {}", 10);
    let (ctx, handle, _) = context(vec![vod], vec![]);
    let mut scenario = vec![
        applied_secret(|data| {
            assert_eq!(
                data.keys().collect::<Vec<_>>(),
                ["config.revision", "config.revision-salt"],
                "the deleted app's files are gone"
            )
        }),
        applied_configmap(|c| assert_eq!(c.apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["vod"])),
    ];
    let orphan_service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ferrocast-live", "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "ferrocast-operator", "ferrocast.io/mediaapp": "live"}}});
    let orphan_cert = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "live-tls-generated", "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "ferrocast-operator", "ferrocast.io/mediaapp": "live", "ferrocast.io/generated-certificate": "true"}}});
    let mut prune = pruning(vec![orphan_service.clone()], vec![orphan_cert.clone()]);
    scenario.push(prune.remove(0));
    scenario.push(expect(
        "DELETE",
        format!("/api/v1/namespaces/{NS}/services/ferrocast-live?"),
        move |body| {
            assert_eq!(body["propagationPolicy"], "Background");
            (200, orphan_service)
        },
    ));
    scenario.push(prune.remove(0));
    scenario.push(expect(
        "DELETE",
        format!("/api/v1/namespaces/{NS}/secrets/live-tls-generated?"),
        |_| not_found("already gone"),
    ));
    run(handle, scenario, ctx.sync_fleet(true)).await.expect("fleet sync");
}

#[tokio::test]
async fn self_signed_tls_is_generated_stored_and_copied() {
    let ma = media_app("metadata: {name: live}\nspec: {tls: {hosts: [live.example.com]}}", 10);
    let (ctx, handle, _) = context(vec![ma.clone()], vec![]);
    let issued = Arc::new(std::sync::Mutex::new(None::<Value>));
    let keep = issued.clone();
    let mut scenario = vec![
        expect(
            "PATCH",
            format!("/api/v1/namespaces/{NS}/secrets/live-tls-generated{APPLY}"),
            move |body| {
                assert_eq!(body["type"], "kubernetes.io/tls");
                assert_eq!(body["metadata"]["ownerReferences"][0]["name"], "live");
                assert_eq!(
                    body["metadata"]["annotations"]["ferrocast.io/hosts"],
                    "live.example.com"
                );
                assert_eq!(
                    body["metadata"]["annotations"]["ferrocast.io/not-after"],
                    (NOW + 90 * 86_400).to_string()
                );
                *keep.lock().unwrap() = Some(body.clone());
                (200, body)
            },
        ),
        event("CertificateIssued", "live"),
    ];
    let issued_check = issued.clone();
    scenario.push(applied_secret(move |data| {
        let body = issued_check.lock().unwrap().clone().unwrap();
        let crt = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(body["data"]["tls.crt"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            data["mediaapp.live.tls.crt"], crt,
            "the generated certificate is copied into the fleet Secret"
        );
        assert!(data["mediaapp.live.tls.key"].contains("PRIVATE KEY"));
    }));
    scenario.push(applied_configmap(|c| {
        assert_eq!(c.tls.certificates.len(), 1);
        assert_eq!(c.tls.certificates[0].hosts, ["live.example.com"]);
    }));
    scenario.extend(pruning(vec![], vec![]));
    // No server pod has been polled since: not Ready, and no rtmps:// endpoint is claimed.
    // (Waiting for a rollout is not worth a Warning event.)
    scenario.push(status_patch("live", |s| {
        let ready = condition(s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ConfigPending")
        );
        assert_eq!(condition(s, "ConfigApplied").status, "Unknown");
        assert_eq!(s.endpoints, None);
    }));
    let action = run(handle, scenario, reconcile_media_app(Arc::new(ma), ctx))
        .await
        .expect("reconcile");
    // Comes back before the renewal is due (60 days from now), or at the resync interval.
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(300))
    );
}

#[tokio::test]
async fn stream_auth_status_lists_its_users() {
    let sa = stream_auth(STUDIO);
    let (ctx, handle, _) = context_with(
        vec![
            media_app(LIVE, 10),
            media_app(
                "metadata: {name: backup}\nspec: {play: {auth: key, authRef: {name: studio}}}",
                5,
            ),
        ],
        vec![sa.clone()],
        vec![keys_secret()],
    );
    let mut scenario = vec![
        applied_secret(|_| {}),
        applied_configmap(|c| assert_eq!(c.apps.len(), 2)),
    ];
    scenario.extend(pruning(vec![], vec![]));
    scenario.push(event("Ready", "studio"));
    scenario.push(expect("PATCH", format!("/apis/ferrocast.io/v1alpha1/namespaces/{NS}/streamauths/studio/status{APPLY}"), |body| {
        assert_eq!(body["kind"], "StreamAuth");
        assert_eq!(body["status"]["usedBy"], json!(["backup", "live"]));
        assert_eq!(body["status"]["conditions"][0]["status"], "True");
        (200, json!({"apiVersion": "ferrocast.io/v1alpha1", "kind": "StreamAuth", "metadata": {"name": "studio", "namespace": NS}, "spec": {"keys": {"secretRef": {"name": "studio-keys"}}}, "status": body["status"]}))
    }));
    run(handle, scenario, reconcile_stream_auth(Arc::new(sa), ctx))
        .await
        .expect("reconcile");
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_are_counted_by_the_error_policy() {
    let ma = media_app("metadata: {name: vod}\nspec: {}", 10);
    let (ctx, handle, metrics) = context(vec![ma.clone()], vec![]);
    let scenario = vec![expect(
        "PATCH",
        format!("/api/v1/namespaces/{NS}/secrets/ferrocast-server-secrets{APPLY}"),
        |_| {
            (
                500,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "etcd is unhappy", "reason": "InternalError", "code": 500}),
            )
        },
    )];
    let ma = Arc::new(ma);
    let err = run(handle, scenario, reconcile_media_app(ma.clone(), ctx.clone()))
        .await
        .expect_err("the apply failed");
    assert_eq!(err.reason(), "KubeError");
    let action = error_policy_media_app(ma, &err, ctx);
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(15))
    );
    assert!(metrics
        .render()
        .contains(r#"ferrocast_operator_reconciliations_total{kind="MediaApp",result="error"} 1"#));
    assert!(metrics
        .render()
        .contains(r#"ferrocast_operator_reconcile_errors_total{kind="MediaApp",reason="KubeError"} 1"#));
}

#[test]
fn related_changes_map_to_the_right_resources() {
    use ferrocast_operator::controller::{
        media_apps_for_secret, media_apps_for_stream_auth, stream_auths_for_media_app,
    };
    let live = Arc::new(media_app(LIVE, 10));
    let tls = Arc::new(media_app("metadata: {name: events}\nspec: {tls: {secretName: events-tls, hosts: [a.example.com]}, webhooks: [{url: 'http://h/x', secretRef: {name: hooks, key: k}}]}", 10));
    let gen = Arc::new(media_app(
        "metadata: {name: gen}\nspec: {tls: {hosts: [a.example.com]}}",
        10,
    ));
    // The same names in a watched namespace: a change there never triggers the fleet
    // namespace's resources, nor the other way round.
    let team_live = Arc::new(media_app(&in_team(LIVE), 10));
    let team_gen = Arc::new(media_app(
        "metadata: {name: gen, namespace: team-a}\nspec: {tls: {hosts: [a.example.com]}}",
        10,
    ));
    let team_studio = Arc::new(stream_auth(&in_team(STUDIO)));
    let apps = vec![live.clone(), tls.clone(), gen.clone(), team_live, team_gen];
    let sas = vec![Arc::new(stream_auth(STUDIO)), team_studio.clone()];
    let f = common::fleet_watching(&[TEAM]);
    let names = |refs: Vec<kube::runtime::reflector::ObjectRef<MediaApp>>| {
        refs.into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap(), r.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(media_apps_for_secret(&f, NS, "studio-keys", &apps, &sas)),
        ["streaming/live"],
        "through the StreamAuth"
    );
    assert_eq!(
        names(media_apps_for_secret(&f, TEAM, "studio-keys", &apps, &sas)),
        ["team-a/live"]
    );
    assert_eq!(
        names(media_apps_for_secret(&f, NS, "events-tls", &apps, &sas)),
        ["streaming/events"]
    );
    assert!(media_apps_for_secret(&f, TEAM, "events-tls", &apps, &sas).is_empty());
    assert_eq!(
        names(media_apps_for_secret(&f, NS, "hooks", &apps, &sas)),
        ["streaming/events"]
    );
    assert_eq!(
        names(media_apps_for_secret(&f, NS, "gen-tls-generated", &apps, &sas)),
        ["streaming/gen"]
    );
    assert_eq!(
        names(media_apps_for_secret(&f, NS, "team-a.gen-tls-generated", &apps, &sas)),
        ["team-a/gen"],
        "a watched namespace's generated certificate is in the fleet namespace"
    );
    assert!(media_apps_for_secret(&f, NS, "unrelated", &apps, &sas).is_empty());
    assert_eq!(
        names(media_apps_for_stream_auth(&stream_auth(STUDIO), &apps)),
        ["streaming/live"]
    );
    assert_eq!(names(media_apps_for_stream_auth(&team_studio, &apps)), ["team-a/live"]);
    // A MediaApp that stopped using a StreamAuth still triggers it (to drop itself from usedBy).
    let mut was_user = stream_auth("metadata: {name: old}\nspec: {keys: {secretRef: {name: k}}}");
    was_user.status = Some(ferrocast_operator::crd::StreamAuthStatus {
        used_by: vec!["live".into()],
        ..Default::default()
    });
    let sas = vec![Arc::new(stream_auth(STUDIO)), Arc::new(was_user)];
    let refs: Vec<String> = stream_auths_for_media_app(&live, &sas)
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(refs, ["studio", "old"]);
}

#[tokio::test]
async fn a_status_write_causes_no_second_fleet_sync() {
    use ferrocast_operator::controller::spec_changes;
    use futures::StreamExt;
    let ma = media_app(LIVE, 10);
    let (ctx, handle, _) = context_with(vec![ma.clone()], vec![stream_auth(STUDIO)], vec![keys_secret()]);
    let revision = revision_of(vec![ma.clone()], vec![stream_auth(STUDIO)], vec![keys_secret()]);
    pods_run(&ctx, &[("server-0", &revision)]);
    let written = Arc::new(std::sync::Mutex::new(None::<MediaAppStatus>));
    let keep = written.clone();
    // The first reconcile writes the fleet, the Service and the status...
    let mut scenario = vec![applied_secret(|_| {}), applied_configmap(|_| {})];
    scenario.extend(pruning(vec![], vec![]));
    scenario.push(service_lookup("ferrocast-live", None));
    scenario.push(applied_service("ferrocast-live", Some("203.0.113.7"), |_| {}));
    scenario.push(event("Ready", "live"));
    scenario.push(status_patch("live", move |s| *keep.lock().unwrap() = Some(s.clone())));
    // ...a second one (a resync) with an unchanged render writes nothing fleet-wide: no
    // Secret, ConfigMap or prune requests, and no status patch.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ferrocast-live", "namespace": NS, "labels": {"ferrocast.io/mediaapp": "live"}}});
    scenario.push(service_lookup("ferrocast-live", Some(svc)));
    scenario.push(applied_service("ferrocast-live", Some("203.0.113.7"), |_| {}));
    let with_status = run(handle, scenario, async {
        reconcile_media_app(Arc::new(ma.clone()), ctx.clone())
            .await
            .expect("first reconcile");
        let mut with_status = ma.clone();
        with_status.metadata.resource_version = Some("2".into());
        with_status.status = written.lock().unwrap().clone();
        reconcile_media_app(Arc::new(with_status.clone()), ctx.clone())
            .await
            .expect("second reconcile");
        with_status
    })
    .await;

    // And the watch event of that status write (same generation, new resourceVersion) is
    // dropped before it can trigger anything; a spec change passes.
    let mut respecced = with_status.clone();
    respecced.metadata.generation = Some(2);
    let events = futures::stream::iter([Ok(ma.clone()), Ok(with_status), Ok(respecced)]);
    let passed: Vec<Option<i64>> = spec_changes(events)
        .map(|e: Result<MediaApp, watcher::Error>| e.unwrap().metadata.generation)
        .collect()
        .await;
    assert_eq!(passed, [Some(1), Some(2)], "only creation and the spec change trigger");
}

#[tokio::test]
async fn ready_waits_until_every_ready_pod_runs_the_new_config() {
    let ma = media_app(LIVE, 10);
    let (ctx, handle, metrics) = context_with(vec![ma.clone()], vec![stream_auth(STUDIO)], vec![keys_secret()]);
    let revision = revision_of(vec![ma.clone()], vec![stream_auth(STUDIO)], vec![keys_secret()]);
    pods_run(&ctx, &[("server-0", &revision), ("server-1", "0123456789abcdef")]);
    let mut scenario = vec![applied_secret(|_| {}), applied_configmap(|_| {})];
    scenario.extend(pruning(vec![], vec![]));
    scenario.push(service_lookup("ferrocast-live", None));
    scenario.push(applied_service("ferrocast-live", Some("203.0.113.7"), |_| {}));
    // Rolling out is no Warning: no event, just the status.
    scenario.push(status_patch("live", |s| {
        let ready = condition(s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ConfigPending")
        );
        let applied = condition(s, "ConfigApplied");
        assert_eq!(
            (applied.status.as_str(), applied.reason.as_str()),
            ("False", "ConfigPending")
        );
        assert!(
            applied.message.contains("1 of 2 ready server pods")
                && applied.message.contains("server-1 (runs 0123456789abcdef)"),
            "{}",
            applied.message
        );
        assert_eq!(s.endpoints, None, "nothing is claimed before the fleet serves it");
    }));
    run(handle, scenario, reconcile_media_app(Arc::new(ma), ctx))
        .await
        .expect("reconcile");
    assert!(metrics
        .render()
        .contains(r#"ferrocast_operator_mediaapp_ready{mediaapp="live"} 0"#));
}

#[tokio::test]
async fn zero_server_pods_is_not_ready_and_says_so() {
    let ma = media_app("metadata: {name: vod}\nspec: {}", 10);
    let (ctx, handle, _) = context(vec![ma.clone()], vec![]);
    pods_run(&ctx, &[]);
    let mut scenario = vec![applied_secret(|_| {}), applied_configmap(|_| {})];
    scenario.extend(pruning(vec![], vec![]));
    scenario.push(event("NoServerPods", "vod"));
    scenario.push(status_patch("vod", |s| {
        let ready = condition(s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NoServerPods")
        );
    }));
    run(handle, scenario, reconcile_media_app(Arc::new(ma), ctx))
        .await
        .expect("reconcile");
}

#[tokio::test]
async fn live_counts_are_written_alone_under_their_own_field_manager() {
    let ma = media_app(LIVE, 10);
    let (ctx, handle, _) = context(vec![ma.clone()], vec![]);
    let live = ferrocast_operator::fleet::Live {
        apps: std::collections::BTreeMap::from([(
            "live".to_string(),
            ferrocast_operator::fleet::AppLive {
                streams: 2,
                publishers: 2,
                players: 9,
            },
        )]),
        ..Default::default()
    };
    let scenario = vec![expect(
        "PATCH",
        format!("/apis/ferrocast.io/v1alpha1/namespaces/{NS}/mediaapps/live/status?&force=true&fieldManager=ferrocast-operator-live"),
        |body| {
            assert_eq!(
                body["status"],
                json!({"liveStreams": 2, "sessions": {"publishers": 2, "players": 9}}),
                "only the live counts: the reconcile's fields stay its own"
            );
            (200, json!({"apiVersion": "ferrocast.io/v1alpha1", "kind": "MediaApp", "metadata": {"name": "live", "namespace": NS}, "spec": {}, "status": body["status"]}))
        },
    )];
    run(
        handle,
        scenario,
        ferrocast_operator::controller::write_live_counts(&ctx, &ma, &live),
    )
    .await
    .expect("live counts written");
}

/// The leader Lease of fleet `fleet`, created `age` seconds ago, held and renewed at `renewed`
/// (`None`: released, as `helm uninstall` leaves it), claiming unlabelled resources or not.
fn fleet_lease(fleet: &str, age: i64, renewed: Option<i64>, claims: bool) -> Value {
    let at = |t: i64| k8s_openapi::jiff::Timestamp::from_second(t).unwrap().to_string();
    json!({
        "metadata": {"name": format!("{fleet}-operator"), "namespace": NS, "creationTimestamp": at(NOW - age),
                     "labels": {"ferrocast.io/fleet": fleet},
                     "annotations": {"ferrocast.io/serves-unlabelled": claims.to_string()}},
        "spec": {"holderIdentity": if renewed.is_some() { "pod-0" } else { "" }, "leaseDurationSeconds": 15,
                 "renewTime": at(renewed.unwrap_or(NOW - 9000))}
    })
}

fn lease_list(items: Vec<Value>) -> Expect {
    expect(
        "GET",
        format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases?&labelSelector=ferrocast.io%2Ffleet"),
        move |_| {
            (
                200,
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList", "metadata": {}, "items": items}),
            )
        },
    )
}

#[tokio::test]
async fn of_two_fleets_serving_unlabelled_mediaapps_in_a_namespace_only_the_older_does() {
    let ma = media_app("metadata: {name: live}\nspec: {}", 10);
    let (ctx, handle, metrics) = context(vec![ma.clone()], vec![]);
    // This fleet ("ferrocast") was installed after "studio", which claims unlabelled
    // resources too and runs: this fleet leaves them to it.
    let leases = vec![
        fleet_lease("ferrocast", 100, Some(NOW - 1), true),
        fleet_lease("studio", 900, Some(NOW - 2), true),
    ];
    // Its reconcile then writes nothing: no fleet sync, no Service, no status (any request
    // besides the Lease list fails the test).
    let (changed, reconciled) = run(handle, vec![lease_list(leases)], async {
        let changed = ferrocast_operator::controller::check_unlabelled(&ctx).await;
        (changed, reconcile_media_app(Arc::new(ma.clone()), ctx.clone()).await)
    })
    .await;
    assert!(
        changed.expect("leases read"),
        "a change of who serves unlabelled resources is reported"
    );
    reconciled.expect("reconcile");
    assert!(!ctx.fleet.serves(&ma.metadata));
    assert_eq!(metrics.serves_unlabelled.get(), 0);
}

#[tokio::test]
async fn a_fleet_takes_unlabelled_mediaapps_back_when_the_older_one_is_uninstalled() {
    let ma = media_app("metadata: {name: live}\nspec: {}", 10);
    let (ctx, handle, metrics) = context(vec![ma.clone()], vec![]);
    ctx.fleet
        .unlabelled_elsewhere
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // helm uninstall released the older fleet's Lease and left it behind.
    let leases = vec![
        fleet_lease("ferrocast", 100, Some(NOW - 1), true),
        fleet_lease("studio", 900, None, true),
    ];
    let changed = run(
        handle,
        vec![lease_list(leases)],
        ferrocast_operator::controller::check_unlabelled(&ctx),
    )
    .await
    .expect("leases read");
    assert!(changed);
    assert!(ctx.fleet.serves(&ma.metadata));
    assert_eq!(metrics.serves_unlabelled.get(), 1);
}

#[tokio::test]
async fn a_newer_fleet_claiming_unlabelled_mediaapps_leaves_them_to_this_one() {
    let ma = media_app("metadata: {name: live}\nspec: {}", 10);
    let (ctx, handle, metrics) = context(vec![ma.clone()], vec![]);
    let leases = vec![
        fleet_lease("ferrocast", 900, Some(NOW - 1), true),
        fleet_lease("late", 10, Some(NOW - 1), true),
    ];
    let changed = run(
        handle,
        vec![lease_list(leases)],
        ferrocast_operator::controller::check_unlabelled(&ctx),
    )
    .await
    .expect("leases read");
    assert!(!changed);
    assert!(ctx.fleet.serves(&ma.metadata));
    assert_eq!(metrics.serves_unlabelled.get(), 1);
}

#[tokio::test]
async fn a_mediaapp_labelled_for_a_fleet_that_runs_nowhere_is_told_so() {
    let ma = media_app(
        "metadata: {name: lost, labels: {ferrocast.io/fleet: ghost}}\nspec: {}",
        10,
    );
    let (ctx, handle, _) = context(vec![ma.clone()], vec![]);
    let scenario = vec![
        expect(
            "GET",
            format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases?&labelSelector=ferrocast.io%2Ffleet"),
            |_| {
                (
                    200,
                    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList", "metadata": {}, "items": [
                        fleet_lease("ferrocast", 900, Some(NOW - 1), false),
                        fleet_lease("studio-b", 500, Some(NOW - 2), false),
                        // An uninstalled release's Lease (released) and a long-gone one: no fleets.
                        fleet_lease("old-release", 9000, None, false),
                        fleet_lease("gone", 9000, Some(NOW - 3600), false)
                    ]}),
                )
            },
        ),
        event("NoFleet", "lost"),
        status_patch("lost", |s| {
            let ready = condition(s, "Ready");
            assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NoFleet"));
            assert!(
                ready.message.contains("\"ghost\"") && ready.message.contains("ferrocast, studio-b"),
                "{}",
                ready.message
            );
        }),
    ];
    // Nothing of the fleet is written for it: it is not this fleet's.
    run(handle, scenario, reconcile_media_app(Arc::new(ma), ctx))
        .await
        .expect("reconcile");
}

#[tokio::test]
async fn a_mediaapp_of_another_running_fleet_is_left_to_it() {
    let ma = media_app(
        "metadata: {name: theirs, labels: {ferrocast.io/fleet: studio-b}}\nspec: {}",
        10,
    );
    let (ctx, handle, _) = context(vec![ma.clone()], vec![]);
    let scenario = vec![expect(
        "GET",
        format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases?&labelSelector=ferrocast.io%2Ffleet"),
        |_| {
            (
                200,
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList", "metadata": {}, "items": [
                    fleet_lease("studio-b", 500, Some(NOW - 2), false)
                ]}),
            )
        },
    )];
    run(handle, scenario, reconcile_media_app(Arc::new(ma), ctx))
        .await
        .expect("reconcile");
}

/// The MediaApp status apply of `name` in namespace `ns`.
fn status_patch_in(ns: &'static str, name: &str, check: impl FnOnce(&MediaAppStatus) + Send + 'static) -> Expect {
    let n = name.to_string();
    expect(
        "PATCH",
        format!("/apis/ferrocast.io/v1alpha1/namespaces/{ns}/mediaapps/{name}/status{APPLY}"),
        move |body| {
            let status: MediaAppStatus = serde_json::from_value(body["status"].clone()).expect("a MediaApp status");
            check(&status);
            (
                200,
                json!({"apiVersion": "ferrocast.io/v1alpha1", "kind": "MediaApp", "metadata": {"name": n, "namespace": ns}, "spec": {}, "status": body["status"]}),
            )
        },
    )
}

fn event_in(ns: &'static str, reason: &'static str, regarding: &'static str) -> Expect {
    expect(
        "POST",
        format!("/apis/events.k8s.io/v1/namespaces/{ns}/events?"),
        move |body| {
            assert_eq!(body["reason"], reason, "event {body}");
            assert_eq!(
                (
                    body["regarding"]["name"].as_str(),
                    body["regarding"]["namespace"].as_str()
                ),
                (Some(regarding), Some(ns))
            );
            (201, body)
        },
    )
}

#[tokio::test]
async fn a_mediaapp_of_a_watched_namespace_is_served_by_the_fleet_and_told_so_in_its_namespace() {
    let f = common::fleet_watching(&[TEAM]);
    let ma = media_app(&in_team(LIVE), 10);
    let sa = stream_auth(&in_team(STUDIO));
    let team_keys = common::secret_in(TEAM, "studio-keys", &[("cam1", "k-team-SECRET")]);
    let (ctx, handle, metrics) = context_for(f.clone(), vec![ma.clone()], vec![sa.clone()], vec![team_keys.clone()]);
    let mut i = common::inputs(vec![ma.clone()], vec![sa], vec![team_keys]);
    i.api_token_key = None;
    let revision = ferrocast_operator::render::render(&f, &i).unwrap().revision;
    pods_run(&ctx, &[("server-0", &revision)]);
    // The fleet's Secret and ConfigMap in the fleet namespace, with team-a's keys under a
    // key of its own.
    let mut scenario = vec![
        applied_secret(|data| {
            assert_eq!(
                data.keys().collect::<Vec<_>>(),
                [
                    "config.revision",
                    "config.revision-salt",
                    "streamauth.team-a_studio.keys.yaml"
                ]
            );
            assert_eq!(data["streamauth.team-a_studio.keys.yaml"], "cam1: k-team-SECRET\n");
        }),
        applied_configmap(|c| {
            assert_eq!(c.apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["live"]);
            assert_eq!(
                c.apps[0].publish.keys_file.as_ref().unwrap().to_str(),
                Some("/etc/ferrocast/secrets/streamauth.team-a_studio.keys.yaml")
            );
        }),
    ];
    // Pruning by label: team-a's own Service stays; a Service and a generated certificate of
    // team-a MediaApps that are gone (no owner reference could have removed them), and the
    // Service of a fleet-namespace MediaApp of the same name that is gone, are deleted.
    let labels = |name: &str, ns: Option<&str>| {
        let mut l = json!({"app.kubernetes.io/managed-by": "ferrocast-operator", "ferrocast.io/fleet": "ferrocast", "ferrocast.io/mediaapp": name});
        if let Some(ns) = ns {
            l["ferrocast.io/mediaapp-namespace"] = json!(ns);
        }
        l
    };
    let svc = |name: &str, l: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS, "labels": l}});
    let kept = svc("ferrocast-team-a-live", labels("live", Some(TEAM)));
    let gone = svc("ferrocast-team-a-old", labels("old", Some(TEAM)));
    let same_name = svc("ferrocast-live", labels("live", None));
    let mut cert_labels = labels("old", Some(TEAM));
    cert_labels["ferrocast.io/generated-certificate"] = json!("true");
    let old_cert = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-a.old-tls-generated", "namespace": NS, "labels": cert_labels}});
    let mut prune = pruning(vec![kept.clone(), gone.clone(), same_name.clone()], vec![old_cert]);
    scenario.push(prune.remove(0));
    for name in ["ferrocast-team-a-old", "ferrocast-live"] {
        scenario.push(expect(
            "DELETE",
            format!("/api/v1/namespaces/{NS}/services/{name}?"),
            |_| not_found("already gone"),
        ));
    }
    scenario.push(prune.remove(0));
    scenario.push(expect(
        "DELETE",
        format!("/api/v1/namespaces/{NS}/secrets/team-a.old-tls-generated?"),
        |_| not_found("already gone"),
    ));
    // Its Service in the fleet namespace (it selects the fleet's pods), without an owner.
    scenario.push(service_lookup("ferrocast-team-a-live", Some(kept)));
    scenario.push(applied_service("ferrocast-team-a-live", Some("203.0.113.8"), |svc| {
        assert_eq!(svc["metadata"]["namespace"], NS);
        assert_eq!(svc["metadata"]["labels"]["ferrocast.io/mediaapp"], "live");
        assert_eq!(svc["metadata"]["labels"]["ferrocast.io/mediaapp-namespace"], TEAM);
        assert!(svc["metadata"].get("ownerReferences").is_none(), "{svc}");
    }));
    // Event and status in the MediaApp's own namespace.
    scenario.push(event_in(TEAM, "Ready", "live"));
    scenario.push(status_patch_in(TEAM, "live", |s| {
        let ready = condition(s, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Reconciled"));
        assert_eq!(s.service.as_deref(), Some("ferrocast-team-a-live"));
        assert_eq!(s.endpoints.as_ref().unwrap().rtmp, "rtmp://203.0.113.8:1935/live");
    }));
    run(handle, scenario, reconcile_media_app(Arc::new(ma), ctx))
        .await
        .expect("reconcile");
    assert!(
        metrics
            .render()
            .contains(r#"ferrocast_operator_mediaapp_ready{mediaapp="team-a/live"} 1"#),
        "{}",
        metrics.render()
    );
}

#[tokio::test]
async fn a_service_of_a_same_named_mediaapp_in_another_namespace_is_never_taken_over() {
    let ma = media_app("metadata: {name: live}\nspec: {service: {type: LoadBalancer}}", 10);
    let (ctx, handle, _) = context_for(common::fleet_watching(&[TEAM]), vec![ma.clone()], vec![], vec![]);
    let mut scenario = vec![applied_secret(|_| {}), applied_configmap(|_| {})];
    scenario.extend(pruning(vec![], vec![]));
    // ferrocast-live exists, made for team-a's MediaApp "live" (an older operator's name).
    scenario.push(service_lookup("ferrocast-live", Some(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ferrocast-live", "namespace": NS, "labels": {"ferrocast.io/mediaapp": "live", "ferrocast.io/mediaapp-namespace": TEAM}}}))));
    scenario.push(event("ServiceConflict", "live"));
    scenario.push(status_patch("live", |s| {
        assert_eq!(condition(s, "Ready").reason, "ServiceConflict")
    }));
    run(handle, scenario, reconcile_media_app(Arc::new(ma), ctx))
        .await
        .expect("reconcile");
}

#[tokio::test]
async fn a_watched_namespace_mediaapp_labelled_for_a_fleet_that_runs_nowhere_is_told_so_there() {
    let lost = media_app(
        "metadata: {name: lost, namespace: team-a, labels: {ferrocast.io/fleet: ghost}}\nspec: {}",
        10,
    );
    let (ctx, handle, _) = context_for(common::fleet_watching(&[TEAM]), vec![lost.clone()], vec![], vec![]);
    let leases = || {
        expect(
            "GET",
            format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases?&labelSelector=ferrocast.io%2Ffleet"),
            |_| {
                (
                    200,
                    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList", "metadata": {}, "items": [
                        {"metadata": {"name": "ferrocast-operator", "namespace": NS, "labels": {"ferrocast.io/fleet": "ferrocast"}}}
                    ]}),
                )
            },
        )
    };
    let scenario = vec![
        leases(),
        event_in(TEAM, "NoFleet", "lost"),
        status_patch_in(TEAM, "lost", |s| {
            let ready = condition(s, "Ready");
            assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NoFleet"));
            assert!(
                ready
                    .message
                    .contains("no Ferrocast fleet \"ghost\" serves namespace team-a"),
                "{}",
                ready.message
            );
        }),
    ];
    run(handle, scenario, reconcile_media_app(Arc::new(lost.clone()), ctx))
        .await
        .expect("reconcile");
    // A fleet of a third namespace that serves it has written its status: left to that fleet.
    let mut served = lost;
    served.metadata.managed_fields = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
            manager: Some("ghost-operator".into()),
            operation: Some("Apply".into()),
            subresource: Some("status".into()),
            ..Default::default()
        },
    ]);
    let (ctx, handle, _) = context_for(common::fleet_watching(&[TEAM]), vec![served.clone()], vec![], vec![]);
    run(handle, vec![leases()], reconcile_media_app(Arc::new(served), ctx))
        .await
        .expect("reconcile");
}

mod leader {
    use super::*;
    use ferrocast_operator::leader::{Elector, Round};
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::Api;

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/streaming/leases";

    fn lease(holder: &str, renewed: i64, transitions: i32) -> Value {
        let t = k8s_openapi::jiff::Timestamp::from_second(renewed).unwrap().to_string();
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "ferrocast-operator", "namespace": NS, "resourceVersion": "7"},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": t, "acquireTime": t, "leaseTransitions": transitions}})
    }

    fn elector() -> (Elector, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api: Api<Lease> = Api::namespaced(Client::new(service, NS), NS);
        (
            Elector::new(api, "ferrocast-operator", "operator-0").for_fleet("ferrocast", true),
            handle,
        )
    }

    fn now() -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(NOW).unwrap()
    }

    /// This replica's monotonic clock at the first round.
    fn t0() -> std::time::Instant {
        static T0: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(std::time::Instant::now)
    }

    #[tokio::test]
    async fn no_lease_is_created_and_held() {
        let (e, handle) = elector();
        let round = run(
            handle,
            vec![
                expect("GET", format!("{LEASES}/ferrocast-operator"), |_| {
                    not_found("leases \"ferrocast-operator\"")
                }),
                expect("POST", format!("{LEASES}?"), |body| {
                    assert_eq!(body["spec"]["holderIdentity"], "operator-0");
                    assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
                    assert_eq!(
                        body["metadata"]["labels"]["ferrocast.io/fleet"], "ferrocast",
                        "other fleets find this one by its Lease"
                    );
                    assert_eq!(
                        body["metadata"]["annotations"]["ferrocast.io/serves-unlabelled"], "true",
                        "and whether it claims unlabelled resources"
                    );
                    (201, body)
                }),
            ],
            e.round(now(), t0()),
        )
        .await;
        assert_eq!(round.unwrap(), Round::Leading);
    }

    #[tokio::test]
    async fn a_valid_lease_of_another_replica_is_left_alone() {
        let (e, handle) = elector();
        let round = run(
            handle,
            vec![expect("GET", format!("{LEASES}/ferrocast-operator"), |_| {
                (200, lease("operator-1", NOW - 5, 3))
            })],
            e.round(now(), t0()),
        )
        .await;
        assert_eq!(round.unwrap(), Round::Following("operator-1".into()));
    }

    #[tokio::test]
    async fn a_lease_is_taken_over_only_a_whole_lease_after_it_was_last_seen_renewed() {
        use std::time::Duration;
        let (e, handle) = elector();
        // The holder's renewTime is an hour behind our wall clock (skew, or a stopped
        // holder): that alone proves nothing. Expiry runs from when we saw this renewal.
        let stale = || (200, lease("operator-1", NOW - 3600, 3));
        let rounds = run(
            handle,
            vec![
                expect("GET", format!("{LEASES}/ferrocast-operator"), move |_| stale()),
                expect("GET", format!("{LEASES}/ferrocast-operator"), move |_| stale()),
                expect("GET", format!("{LEASES}/ferrocast-operator"), move |_| stale()),
                expect("PUT", format!("{LEASES}/ferrocast-operator?"), |body| {
                    assert_eq!(body["metadata"]["resourceVersion"], "7", "optimistic concurrency");
                    assert_eq!(body["spec"]["holderIdentity"], "operator-0");
                    assert_eq!(body["spec"]["leaseTransitions"], 4);
                    (200, body)
                }),
            ],
            async {
                let first = e.round(now(), t0()).await.unwrap();
                let within = e.round(now(), t0() + Duration::from_secs(14)).await.unwrap();
                let after = e.round(now(), t0() + Duration::from_secs(15)).await.unwrap();
                (first, within, after)
            },
        )
        .await;
        assert_eq!(
            rounds,
            (
                Round::Following("operator-1".into()),
                Round::Following("operator-1".into()),
                Round::Leading
            )
        );
    }

    #[tokio::test]
    async fn a_renewal_seen_restarts_the_wait() {
        use std::time::Duration;
        let (e, handle) = elector();
        let rounds = run(
            handle,
            vec![
                expect("GET", format!("{LEASES}/ferrocast-operator"), |_| {
                    (200, lease("operator-1", NOW - 3600, 3))
                }),
                // Renewed meanwhile (new renewTime and resourceVersion): not expired, even
                // 20 s after we first looked.
                expect("GET", format!("{LEASES}/ferrocast-operator"), |_| {
                    let mut l = lease("operator-1", NOW - 3590, 3);
                    l["metadata"]["resourceVersion"] = json!("8");
                    (200, l)
                }),
            ],
            async {
                let first = e.round(now(), t0()).await.unwrap();
                let later = e.round(now(), t0() + Duration::from_secs(20)).await.unwrap();
                (first, later)
            },
        )
        .await;
        assert_eq!(rounds.1, Round::Following("operator-1".into()));
    }

    #[tokio::test]
    async fn the_holder_renews_and_a_lost_race_is_following() {
        let (e, handle) = elector();
        let round = run(handle, vec![
            expect("GET", format!("{LEASES}/ferrocast-operator"), |_| (200, lease("operator-0", NOW - 4, 1))),
            expect("PUT", format!("{LEASES}/ferrocast-operator?"), |body| {
                assert_eq!(body["spec"]["renewTime"], "2027-01-15T08:00:00.000000Z", "renewed now (MicroTime)");
                assert_eq!(body["spec"]["leaseTransitions"], 1, "a renewal is no transition");
                (409, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Conflict", "code": 409, "message": "modified"}))
            }),
        ], e.round(now(), t0())).await;
        assert_eq!(round.unwrap(), Round::Following("another candidate".into()));
    }

    /// A leader whose renewals hang stops leading (`leading` false, `run` returns) before
    /// the Lease can expire for the other replicas, which wait a whole lease from when they
    /// last saw it renewed: with paused time, so the deadline is exact.
    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_renewals_hang_steps_down_before_its_lease_could_expire() {
        use std::time::Duration;
        let (e, mut handle) = elector();
        let (leading_tx, mut leading_rx) = tokio::sync::watch::channel(false);
        let gauge = prometheus::IntGauge::new("leader", "leader").unwrap();
        let started = tokio::time::Instant::now();
        let campaign = tokio::spawn(async move { e.run(leading_tx, gauge).await });
        // First round: no Lease, created.
        let (req, send) = handle.next_request().await.expect("GET");
        assert_eq!(req.method(), "GET");
        send.send_response(
            Response::builder()
                .status(404)
                .body(Body::from(serde_json::to_vec(&not_found("lease").1).unwrap()))
                .unwrap(),
        );
        let (req, send) = handle.next_request().await.expect("POST");
        assert_eq!(req.method(), "POST");
        let created = serde_json::to_vec(&lease("operator-0", NOW, 0)).unwrap();
        send.send_response(Response::builder().status(201).body(Body::from(created)).unwrap());
        leading_rx.wait_for(|l| *l).await.unwrap();
        let renewed = started;
        // Every later request hangs (an apiserver that stopped answering).
        let hung = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(r) = handle.next_request().await {
                held.push(r);
            }
        });
        let lease = Duration::from_secs(ferrocast_operator::leader::LEASE_SECS as u64);
        tokio::time::timeout(4 * lease, leading_rx.wait_for(|l| !*l))
            .await
            .expect("a leader that cannot renew steps down")
            .unwrap();
        let stepped_down = tokio::time::Instant::now();
        assert!(
            stepped_down < renewed + lease,
            "stepped down {:?} after its last renewal; another replica may take over after {lease:?}",
            stepped_down - renewed
        );
        let outcome = tokio::time::timeout(Duration::from_millis(1), campaign).await;
        assert!(
            matches!(outcome, Ok(Ok(ferrocast_operator::Error::LostLease))),
            "the campaign ends with the step-down"
        );
        hung.abort();
    }
}
