//! The whole operator loop (`controller::run`: both controllers, their watches and mappings,
//! the fleet and live loops) against a small in-memory API server that lists, watches, gets,
//! applies, replaces and deletes objects. It checks the behaviour a cluster would show:
//! resources in, ConfigMap/Secret/Service/status out; a load balancer address arriving; a
//! referenced Secret changing; a MediaApp deleted. The fake has no garbage collector, so the
//! deletion shows the operator's own pruning.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{fleet, NS};
use ferrocast_server::config::Config;
use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// Objects by collection path (`/api/v1/namespaces/streaming/secrets`) and name, with a
/// change log for watches.
#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<(String, String), Value>,
    log: Vec<(u64, String, &'static str, Value)>,
}

#[derive(Clone, Default)]
struct Fake {
    store: Arc<Mutex<Store>>,
    /// Writes that changed something, to see that the operator settles.
    writes: Arc<std::sync::atomic::AtomicUsize>,
    changed: Arc<tokio::sync::Notify>,
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let labels = &obj["metadata"]["labels"];
        match term.split_once('=') {
            Some((k, v)) => labels[k].as_str() == Some(v),
            None => labels.get(term).is_some(),
        }
    })
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn status_error(code: u16, reason: &str) -> (u16, Value) {
    (code, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "code": code, "message": reason}))
}

impl Fake {
    /// Stores `obj` under `collection`, stamping resourceVersion (and uid, generation on create).
    fn put(&self, collection: &str, mut obj: Value) -> Value {
        let mut s = self.store.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let key = (collection.to_string(), name.clone());
        let old = s.objects.get(&key).cloned();
        let meta = obj["metadata"].as_object_mut().unwrap();
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("namespace".into(), json!(NS));
        match &old {
            Some(o) => {
                meta.insert("uid".into(), o["metadata"]["uid"].clone());
                meta.insert("creationTimestamp".into(), o["metadata"]["creationTimestamp"].clone());
                let generation = o["metadata"]["generation"].as_i64().unwrap_or(1);
                let bump = i64::from(o.get("spec") != obj.get("spec"));
                obj["metadata"]["generation"] = json!(generation + bump);
            }
            None => {
                meta.insert("uid".into(), json!(format!("uid-{name}-{rv}")));
                meta.insert("creationTimestamp".into(), json!(format!("2026-01-01T00:00:{:02}Z", rv % 60)));
                meta.insert("generation".into(), json!(1));
            }
        }
        // Like the apiserver, a write that changes nothing is a no-op: no new version, no event.
        if let Some(o) = &old {
            let mut same = obj.clone();
            same["metadata"]["resourceVersion"] = o["metadata"]["resourceVersion"].clone();
            if same == *o {
                s.rv -= 1;
                return o.clone();
            }
        }
        self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        s.objects.insert(key, obj.clone());
        s.log.push((rv, collection.to_string(), kind, obj.clone()));
        drop(s);
        self.changed.notify_waiters();
        obj
    }

    fn delete(&self, collection: &str, name: &str) -> Option<Value> {
        let mut s = self.store.lock().unwrap();
        let obj = s.objects.remove(&(collection.to_string(), name.to_string()))?;
        s.rv += 1;
        let rv = s.rv;
        s.log.push((rv, collection.to_string(), "DELETED", obj.clone()));
        drop(s);
        self.changed.notify_waiters();
        Some(obj)
    }

    fn get(&self, collection: &str, name: &str) -> Option<Value> {
        self.store.lock().unwrap().objects.get(&(collection.to_string(), name.to_string())).cloned()
    }

    async fn handle(&self, req: Request<Body>) -> (u16, Value, bool) {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), decode(v)))
            .collect();
        let body = req.into_body().collect_bytes().await.unwrap();
        let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
        // /api/v1/namespaces/NS/RES[/NAME[/status]] or /apis/G/V/namespaces/NS/RES[...]
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let ns_at = parts.iter().position(|p| *p == "namespaces").unwrap();
        let collection = format!("/{}", parts[..ns_at + 3].join("/"));
        let name = parts.get(ns_at + 3).map(|s| s.to_string());
        let status = parts.get(ns_at + 4) == Some(&"status");
        let selector = query.get("labelSelector").cloned().unwrap_or_default();
        match (method.as_str(), name) {
            ("GET", None) if query.get("watch").map(String::as_str) == Some("true") => {
                let since: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
                let deadline = tokio::time::sleep(Duration::from_millis(500));
                tokio::pin!(deadline);
                loop {
                    let notified = self.changed.notified();
                    let events: Vec<Value> = {
                        let s = self.store.lock().unwrap();
                        s.log
                            .iter()
                            .filter(|(rv, c, _, o)| *rv > since && *c == collection && labels_match(o, &selector))
                            .map(|(_, _, t, o)| json!({"type": t, "object": o}))
                            .collect()
                    };
                    if !events.is_empty() {
                        return (200, Value::Array(events), true);
                    }
                    tokio::select! {
                        _ = notified => {}
                        _ = &mut deadline => return (200, Value::Array(vec![]), true),
                    }
                }
            }
            ("GET", None) => {
                let s = self.store.lock().unwrap();
                let items: Vec<Value> = s.objects.iter().filter(|((c, _), o)| *c == collection && labels_match(o, &selector)).map(|(_, o)| o.clone()).collect();
                (200, json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}), false)
            }
            ("GET", Some(n)) => match self.get(&collection, &n) {
                Some(o) => (200, o, false),
                None => {
                    let (c, v) = status_error(404, "NotFound");
                    (c, v, false)
                }
            },
            ("POST", None) => (201, self.put(&collection, body), false),
            ("PUT", Some(_)) => (200, self.put(&collection, body), false),
            ("PATCH", Some(n)) if status => match self.get(&collection, &n) {
                Some(mut o) => {
                    o["status"] = body["status"].clone();
                    (200, self.put(&collection, o), false)
                }
                None => {
                    let (c, v) = status_error(404, "NotFound");
                    (c, v, false)
                }
            },
            ("PATCH", Some(n)) => {
                // Server-side apply (whole object) or a merge patch (events): the fake replaces,
                // keeping a status the patch does not carry.
                let mut obj = body;
                if let Some(old) = self.get(&collection, &n) {
                    if obj.get("status").is_none() {
                        if let Some(st) = old.get("status") {
                            obj["status"] = st.clone();
                        }
                    }
                    if obj.get("metadata").and_then(|m| m.get("name")).is_none() {
                        let mut merged = old.clone();
                        merged.as_object_mut().unwrap().extend(obj.as_object().unwrap().clone());
                        obj = merged;
                    }
                }
                obj["metadata"]["name"] = json!(n);
                (200, self.put(&collection, obj), false)
            }
            ("DELETE", Some(n)) => match self.delete(&collection, &n) {
                Some(o) => (200, o, false),
                None => {
                    let (c, v) = status_error(404, "NotFound");
                    (c, v, false)
                }
            },
            (m, n) => panic!("the fake API server does not do {m} {collection} {n:?}"),
        }
    }

    /// Serves the mocked client's requests, each in its own task (watches wait for changes).
    fn serve(self, mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>) {
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let fake = self.clone();
                tokio::spawn(async move {
                    let (status, body, lines) = fake.handle(req).await;
                    let bytes = match (lines, body) {
                        (true, Value::Array(events)) => events.iter().map(|e| format!("{e}\n")).collect::<String>().into_bytes(),
                        (_, body) => serde_json::to_vec(&body).unwrap(),
                    };
                    send.send_response(Response::builder().status(status).body(Body::from(bytes)).unwrap());
                });
            }
        });
    }
}

const SECRETS: &str = "/api/v1/namespaces/streaming/secrets";
const CONFIGMAPS: &str = "/api/v1/namespaces/streaming/configmaps";
const SERVICES: &str = "/api/v1/namespaces/streaming/services";
const MEDIAAPPS: &str = "/apis/ferrocast.io/v1alpha1/namespaces/streaming/mediaapps";
const STREAMAUTHS: &str = "/apis/ferrocast.io/v1alpha1/namespaces/streaming/streamauths";

/// Waits (bounded) until `f` holds, for eventually consistent outcomes.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(fake: &Fake) -> Option<Config> {
    let cm = fake.get(CONFIGMAPS, "ferrocast-server-config")?;
    Some(Config::from_yaml(cm["data"]["ferrocast.yaml"].as_str()?, "cm").unwrap())
}

fn fleet_secret(fake: &Fake, key: &str) -> Option<String> {
    let s = fake.get(SECRETS, "ferrocast-server-secrets")?;
    let v = s["data"][key].as_str()?;
    Some(String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_loop_converges_reacts_and_cleans_up() {
    let fake = Fake::default();
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    fake.clone().serve(handle);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    fake.put(SECRETS, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "studio-keys"}, "data": {"cam1": b64("k-one")}}));
    fake.put(STREAMAUTHS, json!({"apiVersion": "ferrocast.io/v1alpha1", "kind": "StreamAuth", "metadata": {"name": "studio"}, "spec": {"keys": {"secretRef": {"name": "studio-keys"}}}}));
    fake.put(MEDIAAPPS, json!({"apiVersion": "ferrocast.io/v1alpha1", "kind": "MediaApp", "metadata": {"name": "live"}, "spec": {"publish": {"auth": "key", "authRef": "studio"}, "service": {"type": "LoadBalancer"}}}));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let client = Client::new(service, NS);
    let run = tokio::spawn(ferrocast_operator::controller::run(client, fleet(), ferrocast_operator::metrics::Metrics::new(), "operator-0", 9090, async move {
        let _ = stop_rx.await;
    }));

    // Converges: the app is served with its keys, its Service exists, status says why not ready yet.
    eventually("the ConfigMap serves `live`", || config(&fake).is_some_and(|c| c.apps.iter().any(|a| a.name == "live"))).await;
    eventually("the keys file is in the fleet Secret", || fleet_secret(&fake, "streamauth.studio.keys.yaml").as_deref() == Some("cam1: k-one\n")).await;
    eventually("the Service exists", || fake.get(SERVICES, "ferrocast-live").is_some()).await;
    eventually("status: ServicePending", || fake.get(MEDIAAPPS, "live").is_some_and(|m| m["status"]["conditions"][0]["reason"] == "ServicePending")).await;
    eventually("the StreamAuth lists its user", || fake.get(STREAMAUTHS, "studio").is_some_and(|s| s["status"]["usedBy"] == json!(["live"]))).await;

    // The cloud assigns an address: the owned Service changes, the MediaApp becomes Ready.
    let mut svc = fake.get(SERVICES, "ferrocast-live").unwrap();
    svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}});
    fake.put(SERVICES, svc);
    eventually("Ready with the load balancer's endpoint", || {
        fake.get(MEDIAAPPS, "live").is_some_and(|m| m["status"]["conditions"][0]["status"] == "True" && m["status"]["endpoints"]["rtmp"] == "rtmp://203.0.113.9:1935/live")
    })
    .await;

    // A referenced Secret changes: reaches the fleet Secret through the StreamAuth.
    fake.put(SECRETS, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "studio-keys"}, "data": {"cam1": b64("k-two")}}));
    eventually("the rotated key reaches the fleet Secret", || fleet_secret(&fake, "streamauth.studio.keys.yaml").as_deref() == Some("cam1: k-two\n")).await;

    // Deleted: the shared config drops it, its Service goes, the StreamAuth forgets it.
    fake.delete(MEDIAAPPS, "live");
    eventually("the ConfigMap serves nothing", || config(&fake).is_some_and(|c| c.apps.is_empty())).await;
    eventually("the Service is deleted", || fake.get(SERVICES, "ferrocast-live").is_none()).await;
    eventually("the keys are gone from the fleet Secret", || fleet_secret(&fake, "streamauth.studio.keys.yaml").is_none()).await;
    eventually("usedBy is empty", || fake.get(STREAMAUTHS, "studio").is_some_and(|s| s["status"]["usedBy"] == json!([]))).await;

    // Settled: with nothing changing, the operator writes nothing more.
    let writes = || fake.writes.load(std::sync::atomic::Ordering::Relaxed);
    let settled = writes();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(writes(), settled, "no reconcile storm: an idle fleet causes no writes");

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(30), run).await.expect("the controllers stop on shutdown").unwrap();
}
