//! The reconcile as a pure function: input resources -> ConfigMap, Secret, Services and
//! statuses, for every not-ready reason, sign-secret rotation, a StreamAuth shared by two
//! MediaApps, and the rule that secret values never reach the ConfigMap or a status.

mod common;

use std::collections::BTreeMap;

use common::{fleet, inputs, media_app, secret, stream_auth, NOW};
use ferrocast_operator::crd::{MediaApp, MediaAppStatus};
use ferrocast_operator::fleet::{AppLive, Live, Rollout, TlsListening};
use ferrocast_operator::render::{render, Desired, Fleet, Inputs};
use ferrocast_operator::status::{media_app_status, not_ready_reason};
use ferrocast_server::config::{AuthMode, Config};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Secret, Service, ServiceStatus};

/// Everything one reconcile produces, with the Services as Kubernetes reports them.
struct Outcome {
    desired: Desired,
    statuses: BTreeMap<String, MediaAppStatus>,
}

/// A Service as the apiserver returns it, with a load balancer address when `lb_ip` is set.
fn observed(desired: &Service, lb_ip: Option<&str>) -> Service {
    let mut s = desired.clone();
    if let Some(ip) = lb_ip {
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some(ip.into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
    }
    s
}

/// Every ready server pod runs the rendered config (and listens on RTMPS and HTTPS).
const APPLIED: Rollout = Rollout::Applied {
    pods: 2,
    tls: TlsListening::BOTH,
};

fn reconcile(inputs: &Inputs, lb_ip: Option<&str>, rollout: &Rollout) -> Outcome {
    reconcile_for(&fleet(), inputs, lb_ip, rollout)
}

/// [`reconcile`] for `fleet`; statuses keyed like the render's outputs (`<namespace>/<name>`
/// outside the fleet namespace), for the MediaApps the fleet serves.
fn reconcile_for(fleet: &Fleet, inputs: &Inputs, lb_ip: Option<&str>, rollout: &Rollout) -> Outcome {
    let desired = render(fleet, inputs).expect("render");
    let statuses = inputs
        .media_apps
        .iter()
        .filter(|ma| fleet.serves(&ma.metadata))
        .map(|ma| {
            let name = fleet.key_of(&ma.metadata);
            let svc = desired.services.get(&name).map(|s| observed(s, lb_ip));
            (
                name.clone(),
                media_app_status(
                    fleet,
                    ma,
                    &desired.apps[&name],
                    svc.as_ref(),
                    rollout,
                    &desired.revision,
                    NOW,
                ),
            )
        })
        .collect();
    Outcome { desired, statuses }
}

impl Outcome {
    fn config(&self) -> Config {
        let yaml = &self.desired.config_map.data.as_ref().unwrap()["ferrocast.yaml"];
        Config::from_yaml(yaml, "rendered").expect("the server accepts the rendered config")
    }
    fn yaml(&self) -> &str {
        &self.desired.config_map.data.as_ref().unwrap()["ferrocast.yaml"]
    }
    fn secret(&self, key: &str) -> Option<String> {
        self.desired
            .secret
            .data
            .as_ref()
            .unwrap()
            .get(key)
            .map(|v| String::from_utf8(v.0.clone()).unwrap())
    }
    fn secret_keys(&self) -> Vec<String> {
        self.desired.secret.data.as_ref().unwrap().keys().cloned().collect()
    }
    fn reason(&self, media_app: &str) -> &str {
        not_ready_reason(&self.statuses[media_app]).unwrap_or("Ready")
    }
    fn message(&self, media_app: &str) -> &str {
        &self.statuses[media_app].conditions[0].message
    }
    fn served(&self) -> Vec<String> {
        self.config().apps.iter().map(|a| a.name.clone()).collect()
    }
}

fn keys_auth() -> Vec<k8s_openapi::api::core::v1::Secret> {
    vec![secret(
        "studio-keys",
        &[("cam1", "k-cam1-SECRET"), ("studio", "k-studio-SECRET")],
    )]
}

const LIVE_KEY: &str =
    "metadata: {name: live}\nspec: {publish: {auth: key, authRef: {name: studio}}, service: {type: LoadBalancer}}";
const STUDIO_KEYS: &str = "metadata: {name: studio}\nspec: {keys: {secretRef: {name: studio-keys}}}";

/// A TLS pair for `host`, made once per call.
fn tls_secret(name: &str, host: &str) -> k8s_openapi::api::core::v1::Secret {
    let g = ferrocast_operator::tls::generate(&[host.to_string()], NOW).unwrap();
    secret(name, &[("tls.crt", &g.cert_pem), ("tls.key", &g.key_pem)])
}

#[test]
fn key_auth_with_a_load_balancer_renders_config_secret_service_and_status() {
    let i = inputs(
        vec![media_app(LIVE_KEY, 10)],
        vec![stream_auth(STUDIO_KEYS)],
        keys_auth(),
    );
    let pending = reconcile(&i, None, &APPLIED);
    assert_eq!(pending.reason("live"), "ServicePending", "no load balancer address yet");
    assert_eq!(pending.statuses["live"].endpoints, None);

    let live = Live {
        apps: BTreeMap::from([(
            "live".into(),
            AppLive {
                streams: 2,
                publishers: 2,
                players: 7,
            },
        )]),
        ..Live::default()
    };
    let o = reconcile(&i, Some("203.0.113.7"), &APPLIED);
    // ConfigMap: the app, key auth through a keys file in the mounted Secret.
    let c = o.config();
    assert_eq!(o.served(), vec!["live"]);
    assert_eq!(c.apps[0].publish.auth, AuthMode::Key);
    assert_eq!(
        c.apps[0].publish.keys_file.as_deref(),
        Some(std::path::Path::new(
            "/etc/ferrocast/secrets/streamauth.studio.keys.yaml"
        ))
    );
    assert_eq!(c.apps[0].play.auth, AuthMode::None);
    assert_eq!((c.rtmp.port, c.http.port), (1935, 8000), "base settings kept");
    let cm = &o.desired.config_map;
    assert_eq!(
        (cm.metadata.name.as_deref(), cm.metadata.namespace.as_deref()),
        (Some("ferrocast-server-config"), Some("streaming"))
    );
    assert_eq!(
        cm.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "ferrocast-operator"
    );
    assert!(
        cm.metadata.owner_references.is_none(),
        "the shared ConfigMap outlives any one MediaApp"
    );
    // Secret: the keys file, as the server parses it, and the revision it belongs to.
    assert_eq!(
        o.secret_keys(),
        vec!["config.revision", "config.revision-salt", "streamauth.studio.keys.yaml"]
    );
    assert_eq!(o.secret("config.revision"), c.revision.id.clone());
    let keys = ferrocast_server::auth::parse_keys_file(&o.secret("streamauth.studio.keys.yaml").unwrap()).unwrap();
    assert_eq!(
        keys,
        vec![
            ("cam1".to_string(), "k-cam1-SECRET".to_string()),
            ("studio".to_string(), "k-studio-SECRET".to_string())
        ]
    );
    // Service.
    let svc = &o.desired.services["live"];
    assert_eq!(svc.metadata.name.as_deref(), Some("ferrocast-live"));
    let owner = &svc.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            owner.uid.as_str(),
            owner.controller
        ),
        ("MediaApp", "live", "uid-live", Some(true))
    );
    let spec = svc.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.selector.as_ref().unwrap(), &fleet().selector);
    let ports: Vec<(String, i32)> = spec
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.port))
        .collect();
    assert_eq!(
        ports,
        vec![("rtmp".to_string(), 1935), ("http".to_string(), 8000)],
        "no TLS ports without TLS"
    );
    // Status.
    let s = &o.statuses["live"];
    assert_eq!(o.reason("live"), "Ready");
    assert_eq!(s.conditions[0].reason, "Reconciled");
    assert_eq!(s.conditions[0].observed_generation, Some(1));
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(s.app.as_deref(), Some("live"));
    let e = s.endpoints.as_ref().unwrap();
    assert_eq!(e.rtmp, "rtmp://203.0.113.7:1935/live");
    assert_eq!(e.http_flv, "http://203.0.113.7:8000/live/{stream}.flv");
    assert_eq!(e.ws_flv, "ws://203.0.113.7:8000/live/{stream}.flv");
    assert_eq!((e.rtmps.as_deref(), e.https_flv.as_deref()), (None, None));
    assert_eq!(
        (s.live_streams, s.sessions.as_ref()),
        (None, None),
        "live counts are written apart, by the live loop"
    );
    let (streams, sessions) = ferrocast_operator::status::live_counts(&live, "live");
    assert_eq!((streams, sessions.publishers, sessions.players), (2, 2, 7));
}

/// Every not-ready reason: (case, MediaApps, StreamAuths, Secrets, MediaApp checked, reason, message fragment).
#[test]
fn every_not_ready_reason() {
    type Case = (
        &'static str,
        Vec<MediaApp>,
        Vec<&'static str>,
        Vec<Secret>,
        &'static str,
        &'static str,
        &'static str,
    );
    let live = || media_app(LIVE_KEY, 10);
    let cases: Vec<Case> = vec![
        ("StreamAuth missing", vec![live()], vec![], keys_auth(), "live", "AuthRefNotFound", "publish: StreamAuth studio not found"),
        (
            "mode not configured in the StreamAuth",
            vec![live()],
            vec!["metadata: {name: studio}\nspec: {sign: {secretRefs: [{name: s, key: k}]}}"],
            vec![secret("s", &[("k", "v")])],
            "live",
            "AuthModeUnavailable",
            "StreamAuth studio has no keys for auth key",
        ),
        ("keys Secret missing", vec![live()], vec![STUDIO_KEYS], vec![], "live", "SecretNotFound", "Secret studio-keys not found"),
        (
            "sign Secret lacks the key",
            vec![media_app("metadata: {name: live}\nspec: {publish: {auth: sign, authRef: {name: studio}}}", 10)],
            vec!["metadata: {name: studio}\nspec: {sign: {secretRefs: [{name: s, key: current}]}}"],
            vec![secret("s", &[("old", "v")])],
            "live",
            "SecretKeyMissing",
            "Secret s has no key \"current\"",
        ),
        (
            "sign secret empty",
            vec![media_app("metadata: {name: live}\nspec: {publish: {auth: sign, authRef: {name: studio}}}", 10)],
            vec!["metadata: {name: studio}\nspec: {sign: {secretRefs: [{name: s, key: k}]}}"],
            vec![secret("s", &[("k", " \n")])],
            "live",
            "SecretKeyMissing",
            "is empty",
        ),
        (
            "keys Secret with a bad stream name",
            vec![live()],
            vec![STUDIO_KEYS],
            vec![secret("studio-keys", &[("bad name!", "k")])],
            "live",
            "InvalidSecret",
            "not a valid stream name",
        ),
        (
            "token key is not a PEM public key",
            vec![media_app("metadata: {name: live}\nspec: {play: {auth: token, authRef: {name: studio}}}", 10)],
            vec!["metadata: {name: studio}\nspec: {tokens: {algorithm: RS256, keySecretRefs: [{name: jwt, key: pub}]}}"],
            vec![secret("jwt", &[("pub", "not a key")])],
            "live",
            "InvalidSecret",
            "is not a usable RS256 key",
        ),
        (
            "TLS Secret missing",
            vec![media_app("metadata: {name: live}\nspec: {tls: {secretName: live-tls, hosts: [live.example.com]}}", 10)],
            vec![],
            vec![],
            "live",
            "InvalidTLS",
            "TLS Secret live-tls not found",
        ),
        (
            "TLS Secret without a key",
            vec![media_app("metadata: {name: live}\nspec: {tls: {secretName: live-tls, hosts: [live.example.com]}}", 10)],
            vec![],
            vec![secret("live-tls", &[("tls.crt", "x")])],
            "live",
            "InvalidTLS",
            "TLS Secret live-tls has no tls.key",
        ),
        (
            "TLS certificate for another host",
            vec![media_app("metadata: {name: live}\nspec: {tls: {secretName: live-tls, hosts: [live.example.com]}}", 10)],
            vec![],
            vec![tls_secret("live-tls", "other.example.org")],
            "live",
            "InvalidTLS",
            "does not cover host live.example.com",
        ),
        (
            "TLS key of another certificate",
            vec![media_app("metadata: {name: live}\nspec: {tls: {secretName: live-tls, hosts: [live.example.com]}}", 10)],
            vec![],
            vec![{
                let a = tls_secret("live-tls", "live.example.com");
                let b = tls_secret("x", "live.example.com");
                let mut s = a.clone();
                s.data.as_mut().unwrap().insert("tls.key".into(), b.data.unwrap()["tls.key"].clone());
                s
            }],
            "live",
            "InvalidTLS",
            "does not belong to the certificate",
        ),
        (
            "self-signed certificate not generated yet",
            vec![media_app("metadata: {name: live}\nspec: {tls: {hosts: [live.example.com]}}", 10)],
            vec![],
            vec![],
            "live",
            "CertificatePending",
            "not generated yet",
        ),
        (
            "two MediaApps for one app path: the younger one",
            vec![media_app("metadata: {name: first}\nspec: {app: live}", 100), media_app("metadata: {name: second}\nspec: {app: live}", 10)],
            vec![],
            vec![],
            "second",
            "AppConflict",
            "app \"live\" is already claimed by MediaApp first",
        ),
        (
            "CIDR the CEL rule would refuse",
            vec![media_app("metadata: {name: live}\nspec: {publish: {allow: ['10.0.0.0/33']}}", 10)],
            vec![],
            vec![],
            "live",
            "InvalidSpec",
            "publish.allow has an entry that is not a CIDR",
        ),
        (
            "name too long for a Service",
            vec![media_app("metadata: {name: a-very-long-mediaapp-name-that-cannot-become-a-service-name}\nspec: {app: x, service: {}}", 10)],
            vec![],
            vec![],
            "a-very-long-mediaapp-name-that-cannot-become-a-service-name",
            "InvalidSpec",
            "would not be a valid DNS label",
        ),
        (
            "webhook key missing",
            vec![media_app("metadata: {name: live}\nspec: {webhooks: [{url: 'http://hooks/x', secretRef: {name: hooks, key: hmac}}]}", 10)],
            vec![],
            vec![secret("hooks", &[("other", "x")])],
            "live",
            "SecretKeyMissing",
            "webhook 0: Secret hooks has no key \"hmac\"",
        ),
        (
            "push key missing",
            vec![media_app("metadata: {name: live}\nspec: {push: [{target: 'rtmp://yt/live2/{key}', keySecretRef: {name: yt, key: key}}]}", 10)],
            vec![],
            vec![],
            "live",
            "SecretNotFound",
            "push 0 key: Secret yt not found",
        ),
        (
            "push target the server refuses",
            vec![media_app("metadata: {name: live}\nspec: {push: [{target: 'http://not-rtmp/app'}]}", 10)],
            vec![],
            vec![],
            "live",
            "InvalidSpec",
            "push[0].target",
        ),
        ("load balancer without an address", vec![live()], vec![STUDIO_KEYS], keys_auth(), "live", "ServicePending", "waiting for the load balancer"),
    ];
    for (case, media_apps, auths, secrets, target, reason, message) in cases {
        let i = inputs(media_apps, auths.into_iter().map(stream_auth).collect(), secrets);
        let o = reconcile(&i, None, &APPLIED);
        assert_eq!(o.reason(target), reason, "{case}: {}", o.message(target));
        assert!(o.message(target).contains(message), "{case}: {:?}", o.message(target));
        let c = &o.statuses[target].conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.last_transition_time.as_str()),
            ("Ready", "False", "2027-01-15T08:00:00Z"),
            "{case}"
        );
        let fails_closed = !matches!(reason, "InvalidTLS" | "CertificatePending" | "ServicePending");
        let served = o.served().contains(&o.statuses[target].app.clone().unwrap());
        // The one app path of the AppConflict case is served, by the older MediaApp.
        if reason != "AppConflict" {
            assert_eq!(
                served, !fails_closed,
                "{case}: fail closed on credential and spec problems only"
            );
        }
        o.config(); // whatever the problem, the server accepts the config
    }
}

#[test]
fn app_conflict_keeps_the_older_mediaapp() {
    let o = reconcile(
        &inputs(
            vec![
                media_app("metadata: {name: second}\nspec: {app: live, gopCache: false}", 10),
                media_app("metadata: {name: first}\nspec: {app: live}", 100),
            ],
            vec![],
            vec![],
        ),
        None,
        &APPLIED,
    );
    assert_eq!(o.served(), vec!["live"]);
    assert!(o.config().apps[0].gop_cache, "the older MediaApp's settings");
    assert_eq!((o.reason("first"), o.reason("second")), ("Ready", "AppConflict"));
    // The older one keeps the path while its credentials are broken: nothing is served,
    // rather than the younger MediaApp's settings.
    let o = reconcile(
        &inputs(
            vec![
                media_app(
                    "metadata: {name: first}\nspec: {app: live, publish: {auth: key, authRef: {name: gone}}}",
                    100,
                ),
                media_app("metadata: {name: second}\nspec: {app: live}", 10),
            ],
            vec![],
            vec![],
        ),
        None,
        &APPLIED,
    );
    assert!(o.served().is_empty());
    assert_eq!(
        (o.reason("first"), o.reason("second")),
        ("AuthRefNotFound", "AppConflict")
    );
}

#[test]
fn sign_secret_rotation_changes_only_the_secret() {
    let ma = media_app(
        "metadata: {name: live}\nspec: {publish: {auth: sign, authRef: {name: studio}}, play: {auth: sign, authRef: {name: viewers}}}",
        10,
    );
    let sa = "metadata: {name: studio}\nspec: {sign: {secretRefs: [{name: studio-sign, key: current}, {name: studio-sign, key: previous}]}}";
    let viewers = "metadata: {name: viewers}\nspec: {sign: {secretRefs: [{name: viewers-sign, key: current}]}}";
    let viewer_secret = || secret("viewers-sign", &[("current", "V-2026")]);
    let before = reconcile(
        &inputs(
            vec![ma.clone()],
            vec![stream_auth(sa), stream_auth(viewers)],
            vec![
                secret("studio-sign", &[("current", "S-2026"), ("previous", "S-2025")]),
                viewer_secret(),
            ],
        ),
        None,
        &APPLIED,
    );
    let c = before.config();
    let files = &c.apps[0].publish.sign_secret_files;
    assert_eq!(files.len(), 2, "both secrets are accepted during rotation");
    assert_eq!(
        files[0].to_str(),
        Some("/etc/ferrocast/secrets/streamauth.studio.sign.0")
    );
    assert_eq!(
        c.apps[0].play.sign_secret_files[0].to_str(),
        Some("/etc/ferrocast/secrets/streamauth.viewers.sign.0"),
        "play signs with its own secret"
    );
    assert_eq!(
        (
            before.secret("streamauth.studio.sign.0").as_deref(),
            before.secret("streamauth.studio.sign.1").as_deref()
        ),
        (Some("S-2026"), Some("S-2025"))
    );

    // Rotate: a new current secret, the old current becomes previous.
    let after = reconcile(
        &inputs(
            vec![ma],
            vec![stream_auth(sa), stream_auth(viewers)],
            vec![
                secret("studio-sign", &[("current", "S-2027"), ("previous", "S-2026")]),
                viewer_secret(),
            ],
        ),
        None,
        &APPLIED,
    );
    let unrevised = |o: &Outcome| {
        let mut c = o.config();
        c.revision.id = None;
        c
    };
    assert_eq!(
        unrevised(&after),
        unrevised(&before),
        "the config is unchanged but for its revision: only file contents rotate"
    );
    assert_ne!(
        after.desired.revision, before.desired.revision,
        "a rotated secret is a new revision, so Ready waits until the pods load it"
    );
    assert_eq!(after.secret("config.revision"), Some(after.desired.revision.clone()));
    assert_eq!(
        (
            after.secret("streamauth.studio.sign.0").as_deref(),
            after.secret("streamauth.studio.sign.1").as_deref()
        ),
        (Some("S-2027"), Some("S-2026"))
    );
}

#[test]
fn two_mediaapps_share_one_streamauth() {
    let a = media_app(
        "metadata: {name: live}\nspec: {publish: {auth: key, authRef: {name: studio}}}",
        20,
    );
    let b = media_app("metadata: {name: backup}\nspec: {app: live-backup, publish: {auth: key, authRef: {name: studio}}, play: {auth: key, authRef: {name: studio}}}", 10);
    let o = reconcile(
        &inputs(vec![a, b], vec![stream_auth(STUDIO_KEYS)], keys_auth()),
        None,
        &APPLIED,
    );
    assert_eq!(o.served(), vec!["live", "live-backup"]);
    let c = o.config();
    assert_eq!(
        c.apps[0].publish.keys_file, c.apps[1].publish.keys_file,
        "one keys file for both"
    );
    assert_eq!(
        o.secret_keys(),
        vec!["config.revision", "config.revision-salt", "streamauth.studio.keys.yaml"]
    );
    assert_eq!(
        (o.reason("live"), o.reason("backup")),
        ("Ready", "Ready"),
        "no Service asked: ready at once"
    );
    let sa = &o.desired.stream_auths["studio"];
    assert_eq!(sa.used_by, vec!["backup", "live"]);
    assert_eq!(
        (sa.conditions[0].status.as_str(), sa.conditions[0].reason.as_str()),
        ("True", "Reconciled")
    );
}

#[test]
fn stream_auth_status_reports_its_own_problems() {
    let sas = vec![
        stream_auth("metadata: {name: a}\nspec: {apiUsers: {secretRef: {name: admins-a}}}"),
        stream_auth("metadata: {name: b}\nspec: {apiUsers: {secretRef: {name: admins-b}}}"),
        stream_auth("metadata: {name: c}\nspec: {apiUsers: {secretRef: {name: plain}}}"),
        stream_auth("metadata: {name: d}\nspec: {keys: {secretRef: {name: gone}}}"),
    ];
    let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let secrets = vec![
        secret("admins-a", &[("ops", phc)]),
        secret("admins-b", &[("ops", phc)]),
        secret("plain", &[("root", "hunter2")]),
    ];
    let o = reconcile(&inputs(vec![], sas, secrets), None, &APPLIED);
    let reason = |n: &str| o.desired.stream_auths[n].conditions[0].reason.clone();
    assert_eq!(
        (
            reason("a").as_str(),
            reason("b").as_str(),
            reason("c").as_str(),
            reason("d").as_str()
        ),
        ("Reconciled", "ApiUserConflict", "InvalidSecret", "SecretNotFound")
    );
    assert!(o.desired.stream_auths["b"].conditions[0]
        .message
        .contains("also defined by StreamAuth a"));
    assert!(o.desired.stream_auths["c"].conditions[0]
        .message
        .contains("not an argon2 PHC hash"));
    assert!(o.desired.stream_auths["d"].used_by.is_empty());
    // The valid users are served fleet-wide, with a shared token key.
    let c = o.config();
    assert_eq!(
        c.api.users_file.as_deref(),
        Some(std::path::Path::new("/etc/ferrocast/secrets/api.users.yaml"))
    );
    assert_eq!(
        c.api.jwt_secret_file.as_deref(),
        Some(std::path::Path::new("/etc/ferrocast/secrets/api.token-key"))
    );
    assert_eq!(o.secret("api.users.yaml").unwrap(), format!("ops: {phc}\n"));
    assert_eq!(
        o.secret("api.token-key").as_deref(),
        Some("fixed-api-token-key-for-tests")
    );
}

#[test]
fn tls_from_a_secret_and_generated_certificates_are_copied_into_the_fleet_secret() {
    let named = media_app(
        "metadata: {name: events}\nspec: {tls: {secretName: events-tls, hosts: [live.example.com]}, service: {}}",
        20,
    );
    let generated = media_app(
        "metadata: {name: studio}\nspec: {tls: {hosts: [studio.example.com]}, service: {type: ClusterIP}}",
        10,
    );
    let mut generated_secret = tls_secret("studio-tls-generated", "studio.example.com");
    generated_secret.metadata.labels = Some(BTreeMap::from([
        ("ferrocast.io/mediaapp".to_string(), "studio".to_string()),
        ("ferrocast.io/generated-certificate".to_string(), "true".to_string()),
    ]));
    let secrets = vec![tls_secret("events-tls", "live.example.com"), generated_secret];
    let o = reconcile(
        &inputs(vec![named, generated], vec![], secrets.clone()),
        Some("198.51.100.4"),
        &APPLIED,
    );
    let c = o.config();
    assert_eq!(c.tls.certificates.len(), 2);
    let events = c
        .tls
        .certificates
        .iter()
        .find(|x| x.hosts == ["live.example.com"])
        .unwrap();
    assert_eq!(
        events.cert_file.to_str(),
        Some("/etc/ferrocast/secrets/mediaapp.events.tls.crt")
    );
    assert_eq!(
        events.key_file.to_str(),
        Some("/etc/ferrocast/secrets/mediaapp.events.tls.key")
    );
    let src = |n: &str, k: &str| {
        String::from_utf8(
            secrets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(n))
                .unwrap()
                .data
                .as_ref()
                .unwrap()[k]
                .0
                .clone(),
        )
        .unwrap()
    };
    assert_eq!(
        o.secret("mediaapp.events.tls.crt").unwrap(),
        src("events-tls", "tls.crt")
    );
    assert_eq!(
        o.secret("mediaapp.studio.tls.key").unwrap(),
        src("studio-tls-generated", "tls.key")
    );
    assert_eq!(
        o.desired.generated_certs,
        BTreeMap::from([("studio".to_string(), vec!["studio.example.com".to_string()])])
    );
    // TLS ports on the Service, TLS endpoints by host name.
    let ports: Vec<String> = o.desired.services["events"]
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.name.clone().unwrap())
        .collect();
    assert_eq!(ports, ["rtmp", "http", "rtmps", "https"]);
    let e = o.statuses["events"].endpoints.clone().unwrap();
    assert_eq!(e.rtmp, "rtmp://198.51.100.4:1935/events");
    assert_eq!(e.rtmps.as_deref(), Some("rtmps://live.example.com:1936/events"));
    assert_eq!(
        e.https_flv.as_deref(),
        Some("https://live.example.com:8443/events/{stream}.flv")
    );
    let e = o.statuses["studio"].endpoints.clone().unwrap();
    assert_eq!(
        e.rtmp, "rtmp://ferrocast-studio.streaming.svc:1935/studio",
        "ClusterIP: the in-cluster name"
    );
    assert_eq!((o.reason("events"), o.reason("studio")), ("Ready", "Ready"));
    // A Secret with the generated name that the operator did not make is not used.
    let foreign = vec![tls_secret("studio-tls-generated", "studio.example.com")];
    let o = reconcile(
        &inputs(
            vec![media_app(
                "metadata: {name: studio}\nspec: {tls: {hosts: [studio.example.com]}}",
                10,
            )],
            vec![],
            foreign,
        ),
        None,
        &APPLIED,
    );
    assert_eq!(o.reason("studio"), "InvalidTLS");
    assert!(
        o.message("studio").contains("was not made by the operator"),
        "{}",
        o.message("studio")
    );
}

#[test]
fn webhooks_are_scoped_to_their_app_with_the_hmac_key_in_the_secret() {
    let ma = media_app("metadata: {name: live}\nspec: {webhooks: [{url: 'http://hooks.svc:8080/in', events: [prePublish, donePlay], secretRef: {name: hooks, key: hmac}}]}", 10);
    let o = reconcile(
        &inputs(vec![ma], vec![], vec![secret("hooks", &[("hmac", "H-SECRET")])]),
        None,
        &APPLIED,
    );
    let c = o.config();
    let h = &c.webhooks.hooks[0];
    assert_eq!(
        (h.url.as_str(), h.events.clone(), h.apps.clone()),
        (
            "http://hooks.svc:8080/in",
            vec!["prePublish".to_string(), "donePlay".to_string()],
            vec!["live".to_string()]
        )
    );
    assert_eq!(
        h.secret_file.as_deref().and_then(|p| p.to_str()),
        Some("/etc/ferrocast/secrets/mediaapp.live.webhook.0")
    );
    assert_eq!(o.secret("mediaapp.live.webhook.0").as_deref(), Some("H-SECRET"));
}

#[test]
fn relays_render_with_push_keys_and_cas_in_the_secret_never_the_config_map() {
    let ma = media_app(
        "metadata: {name: live}\nspec: {pull: {source: 'rtmp://origin.example:1935/live', idleCloseSecs: 30}, \
         push: [{target: 'rtmp://a.rtmp.youtube.com/live2/{key}', keySecretRef: {name: yt, key: streamKey}}, \
         {target: 'rtmps://backup.example/live', tlsVerify: true, caSecretRef: {name: backup-ca, key: ca.crt}}]}",
        10,
    );
    let o = reconcile(
        &inputs(
            vec![ma],
            vec![],
            vec![
                secret("yt", &[("streamKey", "abcd-efgh-ijkl-mnop")]),
                secret("backup-ca", &[("ca.crt", "-----BEGIN CERTIFICATE-----")]),
            ],
        ),
        None,
        &APPLIED,
    );
    assert_eq!(o.reason("live"), "Ready", "{}", o.message("live"));
    let c = o.config();
    let pull = c.apps[0].pull.as_ref().expect("pull rendered");
    assert_eq!(
        (pull.source.as_str(), pull.idle_close_secs, pull.tls_verify),
        ("rtmp://origin.example:1935/live", 30, true)
    );
    let push = &c.apps[0].push;
    assert_eq!(push[0].target, "rtmp://a.rtmp.youtube.com/live2/{key}");
    assert_eq!(
        push[0].key_file.as_deref().and_then(|p| p.to_str()),
        Some("/etc/ferrocast/secrets/mediaapp.live.push.0.key")
    );
    assert_eq!(
        o.secret("mediaapp.live.push.0.key").as_deref(),
        Some("abcd-efgh-ijkl-mnop")
    );
    assert_eq!(
        push[1].ca_file.as_deref().and_then(|p| p.to_str()),
        Some("/etc/ferrocast/secrets/mediaapp.live.push.1.ca")
    );
    assert!(
        !o.yaml().contains("abcd-efgh-ijkl-mnop"),
        "a push key reached the ConfigMap"
    );
}

#[test]
fn record_renders_with_storage_credentials_in_the_secret_never_the_config_map() {
    let ma = media_app(
        "metadata: {name: live}\nspec: {record: {mode: always, format: fmp4, segmentSecs: 600, \
         upload: {endpoint: 'http://minio.storage:9000', bucket: recordings, prefix: ferrocast/, removeLocal: true, \
         accessKeyIdSecretRef: {name: s3, key: id}, secretAccessKeySecretRef: {name: s3, key: secret}}}, \
         webhooks: [{url: 'http://hooks/rec', events: [postRecord, doneRecord]}]}",
        10,
    );
    let o = reconcile(
        &inputs(
            vec![ma],
            vec![],
            vec![secret("s3", &[("id", "AKIA-REC"), ("secret", "s3-secret-value")])],
        ),
        None,
        &APPLIED,
    );
    assert_eq!(o.reason("live"), "Ready", "{}", o.message("live"));
    let c = o.config();
    let r = &c.apps[0].record;
    use ferrocast_server::config::{RecordFormat, RecordMode};
    assert_eq!(
        (r.mode, r.format, r.segment_secs, r.path.to_str()),
        (
            RecordMode::Always,
            RecordFormat::Fmp4,
            600,
            Some("/var/lib/ferrocast/records")
        ),
        "the chart mounts the scratch volume at the server's default path"
    );
    let u = &r.upload;
    assert_eq!(
        (
            u.endpoint.as_str(),
            u.bucket.as_str(),
            u.prefix.as_str(),
            u.remove_local
        ),
        ("http://minio.storage:9000", "recordings", "ferrocast/", true)
    );
    assert_eq!(
        u.secret_access_key_file.as_deref().and_then(|p| p.to_str()),
        Some("/etc/ferrocast/secrets/mediaapp.live.record.secret-access-key")
    );
    assert_eq!(
        o.secret("mediaapp.live.record.secret-access-key").as_deref(),
        Some("s3-secret-value")
    );
    assert_eq!(
        o.secret("mediaapp.live.record.access-key-id").as_deref(),
        Some("AKIA-REC")
    );
    assert_eq!(c.webhooks.hooks[0].events, ["postRecord", "doneRecord"]);
    let yaml = o.yaml();
    assert!(
        !yaml.contains("s3-secret-value") && !yaml.contains("AKIA-REC"),
        "storage credentials reached the ConfigMap"
    );
}

#[test]
fn an_empty_fleet_gets_a_config_that_serves_nothing() {
    let o = reconcile(&inputs(vec![], vec![], vec![]), None, &APPLIED);
    assert!(o.config().apps.is_empty(), "apps: [] refuses every stream");
    assert!(o.yaml().contains("apps: []"));
    assert_eq!(
        o.secret_keys(),
        ["config.revision", "config.revision-salt"],
        "only the revision and its salt"
    );
    assert!(o.desired.services.is_empty());
}

#[test]
fn the_base_config_keeps_fleet_settings_and_its_apps_are_replaced() {
    let mut f = fleet();
    f.base = Config::from_yaml("rtmp: {port: 11935, max_connections: 500}\nhub: {publisher_grace_secs: 3}\napps: [{name: stale}]\nwebhooks: {hooks: [{url: 'http://audit/all'}]}\n", "base").unwrap();
    let i = inputs(
        vec![media_app("metadata: {name: live}\nspec: {service: {}}", 10)],
        vec![],
        vec![],
    );
    let d = render(&f, &i).unwrap();
    let c = Config::from_yaml(&d.config_map.data.unwrap()["ferrocast.yaml"], "r").unwrap();
    assert_eq!(
        (c.rtmp.port, c.rtmp.max_connections, c.hub.publisher_grace_secs),
        (11935, 500, 3)
    );
    assert_eq!(c.apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["live"]);
    assert_eq!(
        c.webhooks.hooks[0].url, "http://audit/all",
        "fleet-wide hooks from the base stay"
    );
    let target = d.services["live"].spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .target_port
        .clone();
    assert_eq!(
        target,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
            "rtmp".into()
        )),
        "Services target the server container's named port"
    );
    // So a changed listener port leaves the Service as it is: while the pods roll, old and new
    // pods are each reached on the port they listen on.
    let default_base = render(&fleet(), &i).unwrap();
    assert_eq!(
        d.services["live"], default_base.services["live"],
        "the Service does not follow the port"
    );
}

#[test]
fn a_fleet_base_config_gets_its_pod_to_pod_secret_in_the_fleet_secret_only() {
    let mut f = fleet();
    f.base = Config::from_yaml(
        "cluster: {dns: 'ferrocast-server-headless.media.svc.cluster.local:9090', secret_file: /etc/ferrocast/secrets/cluster.secret}\n",
        "base",
    )
    .unwrap();
    let i = inputs(vec![media_app("metadata: {name: live}\nspec: {}", 10)], vec![], vec![]);
    let d = render(&f, &i).unwrap();
    let yaml = &d.config_map.data.as_ref().unwrap()["ferrocast.yaml"];
    let c = Config::from_yaml(yaml, "r").unwrap();
    assert_eq!(
        c.cluster.dns.as_deref(),
        Some("ferrocast-server-headless.media.svc.cluster.local:9090")
    );
    assert_eq!(
        c.cluster.secret_file,
        Some(f.secrets_dir.join(ferrocast_operator::render::CLUSTER_SECRET_KEY))
    );
    let secret = d.secret.data.as_ref().unwrap();
    assert_eq!(
        secret[ferrocast_operator::render::CLUSTER_SECRET_KEY].0,
        b"fixed-cluster-secret-for-tests".to_vec(),
        "the kept secret, in the fleet Secret"
    );
    assert!(
        !yaml.contains("fixed-cluster-secret-for-tests"),
        "never in the ConfigMap"
    );
    // A single server (no cluster in the base config) gets no such key.
    let single = render(&fleet(), &i).unwrap();
    assert!(!single
        .secret
        .data
        .as_ref()
        .unwrap()
        .contains_key(ferrocast_operator::render::CLUSTER_SECRET_KEY));
}

#[test]
fn service_options_reach_the_service() {
    let ma = media_app(
        "metadata: {name: live}\nspec: {service: {type: LoadBalancer, annotations: {a.example.com/x: 'y'}, loadBalancerSourceRanges: [10.0.0.0/8], externalTrafficPolicy: Local, ports: {rtmp: 1940, http: 80}}}",
        10,
    );
    let o = reconcile(&inputs(vec![ma], vec![], vec![]), Some("2001:db8::7"), &APPLIED);
    let svc = &o.desired.services["live"];
    assert_eq!(svc.metadata.annotations.as_ref().unwrap()["a.example.com/x"], "y");
    let spec = svc.spec.as_ref().unwrap();
    assert_eq!(
        spec.load_balancer_source_ranges.as_deref(),
        Some(&["10.0.0.0/8".to_string()][..])
    );
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    let ports: Vec<(i32, Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>)> = spec
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.port, p.target_port.clone()))
        .collect();
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String as Named;
    assert_eq!(
        ports,
        vec![(1940, Some(Named("rtmp".into()))), (80, Some(Named("http".into())))]
    );
    assert_eq!(
        o.statuses["live"].endpoints.as_ref().unwrap().rtmp,
        "rtmp://[2001:db8::7]:1940/live"
    );
    // No `service`: no Service at all.
    let none = reconcile(
        &inputs(vec![media_app("metadata: {name: live}\nspec: {}", 10)], vec![], vec![]),
        None,
        &APPLIED,
    );
    assert!(none.desired.services.is_empty());
    assert_eq!(
        (none.reason("live"), none.statuses["live"].service.clone()),
        ("Ready", None)
    );
}

#[test]
fn transition_time_moves_only_when_ready_flips() {
    let ma = media_app(LIVE_KEY, 10);
    let i = inputs(vec![ma.clone()], vec![stream_auth(STUDIO_KEYS)], keys_auth());
    let first = reconcile(&i, Some("203.0.113.7"), &APPLIED).statuses["live"].clone();
    // The same facts an hour later, with the status already written: nothing changes.
    let mut again = ma.clone();
    again.status = Some(first.clone());
    let mut later = inputs(vec![again.clone()], vec![stream_auth(STUDIO_KEYS)], keys_auth());
    later.now = NOW + 3600;
    let fleet = fleet();
    let d = render(&fleet, &later).unwrap();
    let svc = observed(&d.services["live"], Some("203.0.113.7"));
    let second = media_app_status(
        &fleet,
        &again,
        &d.apps["live"],
        Some(&svc),
        &APPLIED,
        &d.revision,
        later.now,
    );
    assert_eq!(second, first, "an unchanged status patches to the same object");
    // Now the Secret disappears: Ready flips, the time moves.
    let mut broken = inputs(vec![again.clone()], vec![stream_auth(STUDIO_KEYS)], vec![]);
    broken.now = NOW + 7200;
    let d = render(&fleet, &broken).unwrap();
    let third = media_app_status(
        &fleet,
        &again,
        &d.apps["live"],
        Some(&svc),
        &APPLIED,
        &d.revision,
        broken.now,
    );
    assert_eq!(third.conditions[0].status, "False");
    assert_ne!(
        third.conditions[0].last_transition_time,
        first.conditions[0].last_transition_time
    );
}

#[test]
fn secret_values_never_reach_the_configmap_or_a_status() {
    let secrets = vec![
        secret(
            "studio-keys",
            &[("cam1", "KEYVALUE-cam1-7f3a"), ("studio", "KEYVALUE-studio-91bc")],
        ),
        secret(
            "studio-sign",
            &[("current", "SIGNVALUE-2026-aa"), ("previous", "SIGNVALUE-2025-bb")],
        ),
        secret("jwt", &[("k", "JWTVALUE-hmac-cc")]),
        secret("hooks", &[("hmac", "HOOKVALUE-dd")]),
        secret(
            "admins",
            &[(
                "ops",
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$HASHVALUEaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            )],
        ),
        tls_secret("live-tls", "live.example.com"),
    ];
    let sa = stream_auth(
        "metadata: {name: studio}\nspec: {keys: {secretRef: {name: studio-keys}}, sign: {secretRefs: [{name: studio-sign, key: current}, {name: studio-sign, key: previous}]}, tokens: {algorithm: HS256, keySecretRefs: [{name: jwt, key: k}]}, apiUsers: {secretRef: {name: admins}}}",
    );
    let apps = vec![
        media_app("metadata: {name: live}\nspec: {publish: {auth: key, authRef: {name: studio}}, play: {auth: token, authRef: {name: studio}}, tls: {secretName: live-tls, hosts: [live.example.com]}, service: {}, webhooks: [{url: 'http://h/x', secretRef: {name: hooks, key: hmac}}]}", 20),
        media_app("metadata: {name: vod}\nspec: {publish: {auth: sign, authRef: {name: studio}}}", 10),
        // A broken one too: problem messages must not quote values either.
        media_app("metadata: {name: broken}\nspec: {publish: {auth: sign, authRef: {name: missing}}}", 5),
        media_app("metadata: {name: badtls}\nspec: {tls: {secretName: live-tls, hosts: [other.example.org]}}", 4),
    ];
    let o = reconcile(&inputs(apps, vec![sa], secrets.clone()), Some("203.0.113.7"), &APPLIED);
    assert_eq!(o.served(), vec!["live", "vod", "badtls"]);
    assert_eq!(
        (o.reason("broken"), o.reason("badtls")),
        ("AuthRefNotFound", "InvalidTLS")
    );
    let mut visible = o.yaml().to_string();
    for s in o.statuses.values() {
        visible.push_str(&serde_json::to_string(s).unwrap());
    }
    for s in o.desired.stream_auths.values() {
        visible.push_str(&serde_json::to_string(s).unwrap());
    }
    visible.push_str(&serde_json::to_string(&o.desired.services).unwrap());
    let mut checked = 0;
    for s in &secrets {
        for v in s.data.as_ref().unwrap().values() {
            let text = String::from_utf8(v.0.clone()).unwrap();
            // Each value, and for PEM every body line of it.
            for needle in
                std::iter::once(text.trim()).chain(text.lines().filter(|l| l.len() > 20 && !l.starts_with("-----")))
            {
                assert!(!visible.contains(needle), "secret material {needle:?} leaked");
                checked += 1;
            }
        }
    }
    assert!(checked > 10);
    assert_eq!(
        o.secret("streamauth.studio.token.0").as_deref(),
        Some("JWTVALUE-hmac-cc"),
        "the values are in the Secret"
    );
}

#[test]
fn the_examples_render_ready_once_their_load_balancers_have_addresses() {
    let m = common::examples();
    let i = inputs(m.media_apps.clone(), m.stream_auths.clone(), m.secrets.clone());
    let o = reconcile(&i, Some("203.0.113.7"), &APPLIED);
    let mut served = o.served();
    served.sort();
    assert_eq!(served, ["edge", "events", "games", "live"]);
    for (name, status) in &o.statuses {
        assert_eq!(
            not_ready_reason(status),
            None,
            "MediaApp {name}: {:?}",
            status.conditions
        );
    }
    for (name, status) in &o.desired.stream_auths {
        assert_eq!(
            status.conditions[0].status, "True",
            "StreamAuth {name}: {:?}",
            status.conditions
        );
    }
    assert_eq!(o.desired.stream_auths["studio"].used_by, ["events"]);
    // No example lets a play signature publish: publish and play never share a sign secret.
    let config = o.config();
    for app in &config.apps {
        let contents = |files: &[std::path::PathBuf]| -> Vec<String> {
            files
                .iter()
                .map(|f| o.secret(f.file_name().unwrap().to_str().unwrap()).unwrap())
                .collect()
        };
        let (publish, play) = (
            contents(&app.publish.sign_secret_files),
            contents(&app.play.sign_secret_files),
        );
        assert!(
            publish.iter().all(|s| !play.contains(s)),
            "app {} shares a sign secret between publish and play",
            app.name
        );
    }
    assert_eq!(
        o.statuses["events"].endpoints.as_ref().unwrap().rtmps.as_deref(),
        Some("rtmps://live.example.com:1936/events")
    );
    let before = reconcile(&i, None, &APPLIED);
    assert_eq!(
        (before.reason("live"), before.reason("events"), before.reason("edge")),
        ("ServicePending", "ServicePending", "ServicePending")
    );
    let games = o.config().apps.into_iter().find(|a| a.name == "games").unwrap();
    assert_eq!(games.transcode[0].renditions.len(), 3, "{games:?}");
    let edge = o.config().apps.into_iter().find(|a| a.name == "edge").unwrap();
    assert!(edge.pull.is_some() && edge.push[0].key_file.is_some(), "{edge:?}");
    assert!(
        !o.yaml().contains("FAKE-abcd"),
        "the example's push key stays in the Secret"
    );
}

#[test]
fn a_foreign_service_of_the_same_name_is_a_conflict() {
    let i = inputs(
        vec![media_app("metadata: {name: live}\nspec: {service: {}}", 10)],
        vec![],
        vec![],
    );
    let fleet = fleet();
    let d = render(&fleet, &i).unwrap();
    let mut foreign = observed(&d.services["live"], Some("203.0.113.7"));
    foreign.metadata.labels = Some(BTreeMap::from([("app".to_string(), "someone-else".to_string())]));
    let s = media_app_status(
        &fleet,
        &i.media_apps[0],
        &d.apps["live"],
        Some(&foreign),
        &APPLIED,
        &d.revision,
        NOW,
    );
    assert_eq!(not_ready_reason(&s), Some("ServiceConflict"));
    assert_eq!(s.endpoints, None, "never advertise someone else's address");
    assert!(d.apps["live"].served, "the app itself is still served");
}

#[test]
fn allow_and_deny_lists_are_per_action() {
    let ma = media_app(
        "metadata: {name: live}\nspec: {publish: {allow: [198.51.100.0/24], deny: [198.51.100.9]}, play: {deny: [203.0.113.0/24]}}",
        10,
    );
    let o = reconcile(&inputs(vec![ma], vec![], vec![]), None, &APPLIED);
    let app = &o.config().apps[0];
    assert_eq!(
        (app.publish.allow.clone(), app.publish.deny.clone()),
        (vec!["198.51.100.0/24".to_string()], vec!["198.51.100.9".to_string()])
    );
    assert_eq!(
        (app.play.allow.clone(), app.play.deny.clone()),
        (vec![], vec!["203.0.113.0/24".to_string()])
    );
    assert!(app.allow.is_empty() && app.deny.is_empty(), "no app-wide lists");
}

#[test]
fn the_revision_follows_config_and_secret_files_and_nothing_else() {
    let ma = media_app(LIVE_KEY, 10);
    let base = inputs(vec![ma.clone()], vec![stream_auth(STUDIO_KEYS)], keys_auth());
    let r = |i: &Inputs| render(&fleet(), i).unwrap().revision;
    let mut later = base.clone();
    later.now += 3600;
    assert_eq!(r(&base), r(&later), "time alone is no new revision");
    let rotated = inputs(
        vec![ma.clone()],
        vec![stream_auth(STUDIO_KEYS)],
        vec![secret("studio-keys", &[("cam1", "k-cam1-NEW")])],
    );
    assert_ne!(r(&base), r(&rotated), "a new key is");
    let respecced = inputs(
        vec![media_app(
            "metadata: {name: live}\nspec: {gopCache: false, publish: {auth: key, authRef: {name: studio}}}",
            10,
        )],
        vec![stream_auth(STUDIO_KEYS)],
        keys_auth(),
    );
    assert_ne!(r(&base), r(&respecced), "a new config is");
    let o = reconcile(&base, None, &APPLIED);
    assert_eq!(o.config().revision.id, Some(o.desired.revision.clone()));
    let mut resalted = base.clone();
    resalted.revision_salt = Some("another fleet's salt".into());
    assert_ne!(
        r(&base),
        r(&resalted),
        "keyed by the fleet's secret salt: the revision tells nothing about secret files"
    );
}

#[test]
fn a_fleet_serves_its_labelled_resources_and_unlabelled_ones_only_when_it_is_the_default() {
    let ours = media_app(
        "metadata: {name: ours, labels: {ferrocast.io/fleet: ferrocast}}\nspec: {}",
        10,
    );
    let theirs = media_app(
        "metadata: {name: theirs, labels: {ferrocast.io/fleet: studio-b}}\nspec: {}",
        10,
    );
    let plain = media_app("metadata: {name: plain}\nspec: {}", 10);
    let i = inputs(vec![ours, theirs, plain], vec![], vec![]);
    let served = |fleet: &ferrocast_operator::render::Fleet| -> Vec<String> {
        render(fleet, &i)
            .unwrap()
            .config
            .apps
            .iter()
            .map(|a| a.name.clone())
            .collect()
    };
    assert_eq!(served(&fleet()), ["ours", "plain"]);
    let mut second = fleet();
    second.name = "studio-b".into();
    second.serves_unlabelled = false;
    assert_eq!(served(&second), ["theirs"]);
    // Per-release names, labels and field managers: two fleets never touch each other's objects.
    let d = render(
        &second,
        &inputs(
            vec![media_app(
                "metadata: {name: theirs, labels: {ferrocast.io/fleet: studio-b}}\nspec: {service: {}}",
                10,
            )],
            vec![],
            vec![],
        ),
    )
    .unwrap();
    let svc = &d.services["theirs"];
    assert_eq!(svc.metadata.name.as_deref(), Some("studio-b-theirs"));
    assert_eq!(svc.metadata.labels.as_ref().unwrap()["ferrocast.io/fleet"], "studio-b");
    assert_eq!(
        d.config_map.metadata.labels.as_ref().unwrap()["ferrocast.io/fleet"],
        "studio-b"
    );
    assert_eq!(second.field_manager(), "studio-b-operator");
}

#[test]
fn per_app_service_takes_a_load_balancer_class() {
    let ma = media_app(
        "metadata: {name: live}\nspec: {service: {loadBalancerClass: service.k8s.aws/nlb, annotations: {metallb.universe.tf/address-pool: public}}}",
        10,
    );
    let o = reconcile(&inputs(vec![ma], vec![], vec![]), None, &APPLIED);
    let svc = &o.desired.services["live"];
    assert_eq!(
        svc.spec.as_ref().unwrap().load_balancer_class.as_deref(),
        Some("service.k8s.aws/nlb")
    );
    assert_eq!(
        svc.metadata.annotations.as_ref().unwrap()["metallb.universe.tf/address-pool"],
        "public"
    );
}

#[test]
fn tls_endpoints_are_listed_only_once_the_pods_run_the_config() {
    let ma = media_app(
        "metadata: {name: live}\nspec: {tls: {hosts: [live.example.com]}, service: {}}",
        10,
    );
    let mut i = inputs(
        vec![ma],
        vec![],
        vec![tls_secret("live-tls-generated", "live.example.com")],
    );
    let s = i.secrets.get_mut("live-tls-generated").unwrap();
    s.metadata.labels = Some(BTreeMap::from([
        ("ferrocast.io/mediaapp".to_string(), "live".to_string()),
        ("ferrocast.io/generated-certificate".to_string(), "true".to_string()),
    ]));
    let pending = reconcile(&i, Some("203.0.113.7"), &Rollout::Unknown);
    assert_eq!(pending.reason("live"), "ConfigPending");
    assert_eq!(
        pending.statuses["live"].endpoints, None,
        "no rtmps:// before the pods serve it"
    );
    let served = reconcile(&i, Some("203.0.113.7"), &APPLIED);
    assert_eq!(served.reason("live"), "Ready");
    let e = served.statuses["live"].endpoints.clone().unwrap();
    assert_eq!(e.rtmps.as_deref(), Some("rtmps://live.example.com:1936/live"));
    // A pod that runs the config but could not bind its RTMPS port (taken) on reload: the
    // config applied, but rtmps:// is not served everywhere, so it is not listed.
    let https_only = Rollout::Applied {
        pods: 2,
        tls: TlsListening {
            rtmps: false,
            https: true,
        },
    };
    let partial = reconcile(&i, Some("203.0.113.7"), &https_only);
    let e = partial.statuses["live"].endpoints.clone().unwrap();
    assert_eq!(e.rtmps, None, "RTMPS does not listen on every pod");
    assert_eq!(
        e.https_flv.as_deref(),
        Some("https://live.example.com:8443/live/{stream}.flv")
    );
    assert_eq!(e.rtmp, "rtmp://203.0.113.7:1935/live", "plain endpoints stay");
}

#[test]
fn hls_settings_reach_the_server_config_and_the_endpoints() {
    use ferrocast_server::config::HlsMode;
    let i = inputs(
        vec![
            media_app(
                "metadata: {name: tv}\nspec: {hls: {mode: always, segmentSecs: 4, partMs: 300}, service: {}}",
                10,
            ),
            media_app("metadata: {name: radio}\nspec: {hls: {mode: \"off\"}, service: {}}", 20),
            media_app("metadata: {name: plain}\nspec: {service: {}}", 30),
        ],
        vec![],
        vec![],
    );
    let o = reconcile(&i, Some("203.0.113.9"), &APPLIED);
    let c = o.config();
    let app = |n: &str| c.apps.iter().find(|a| a.name == n).unwrap().hls.clone();
    assert_eq!(
        (
            app("tv").mode,
            app("tv").segment_secs,
            app("tv").part_ms,
            app("tv").window_segments
        ),
        (HlsMode::Always, 4, 300, 7),
        "unset values keep the server defaults"
    );
    assert_eq!(app("radio").mode, HlsMode::Off);
    assert_eq!(app("plain").mode, HlsMode::OnDemand, "on demand when unset");
    let tv = o.statuses["tv"].endpoints.clone().unwrap();
    assert_eq!(
        tv.hls.as_deref(),
        Some("http://203.0.113.9:8000/tv/{stream}/index.m3u8")
    );
    assert_eq!(
        tv.dash.as_deref(),
        Some("http://203.0.113.9:8000/tv/{stream}/index.mpd")
    );
    let radio = o.statuses["radio"].endpoints.clone().unwrap();
    assert_eq!((radio.hls, radio.dash), (None, None), "no HLS endpoint when it is off");
}

#[test]
fn transcode_rules_reach_the_server_config_and_a_bad_ladder_is_not_served() {
    use ferrocast_server::config::{KeyframeMode, RenditionCodec, TranscodeEncoder};
    let i = inputs(
        vec![
            media_app(
                "metadata: {name: game}\nspec: {service: {}, transcode: [{rule: 'cup*', encoder: nvenc, \
                 keyframes: interval, gopMs: 2000, renditions: [{name: 480p, height: 480, videoKbps: 800}, \
                 {name: 360p, width: 640, height: 360, videoKbps: 400, maxKbps: 600, fps: 15, audioKbps: 64, \
                 codec: h265, preset: p2}]}]}",
                10,
            ),
            media_app(
                "metadata: {name: twice}\nspec: {service: {}, transcode: [{renditions: [\
                 {name: a, height: 480, videoKbps: 800}, {name: a, height: 360, videoKbps: 400}]}]}",
                20,
            ),
        ],
        vec![],
        vec![],
    );
    let o = reconcile(&i, Some("203.0.113.9"), &APPLIED);
    let c = o.config();
    let game = &c.apps.iter().find(|a| a.name == "game").unwrap().transcode[0];
    assert_eq!(
        (game.rule.as_str(), game.encoder, game.keyframes, game.gop_ms),
        ("cup*", TranscodeEncoder::Nvenc, KeyframeMode::Interval, 2000)
    );
    let (a, b) = (&game.renditions[0], &game.renditions[1]);
    assert_eq!(
        (
            a.width,
            a.height,
            a.video_kbps,
            a.max_kbps,
            a.fps,
            a.audio_kbps,
            a.codec
        ),
        (0, 480, 800, 0, 0, 96, RenditionCodec::H264),
        "unset values keep the server defaults"
    );
    assert_eq!(
        (b.width, b.max_kbps, b.fps, b.audio_kbps, b.codec, b.preset.as_deref()),
        (640, 600, 15, 64, RenditionCodec::H265, Some("p2"))
    );
    assert_eq!(o.served(), ["game"], "a ladder the server would refuse is not served");
    assert_eq!(o.reason("twice"), "InvalidSpec");
    assert!(
        o.message("twice").contains("transcode[0].renditions[1].name"),
        "{}",
        o.message("twice")
    );
}

/// A resource's YAML (`metadata: {name: ...` first) placed in namespace `ns`.
fn in_ns(ns: &str, yaml: &str) -> String {
    yaml.replacen("metadata: {", &format!("metadata: {{namespace: {ns}, "), 1)
}

#[test]
fn a_watched_namespace_is_served_from_its_own_secrets_under_qualified_names() {
    use common::{fleet_watching, secret_in, TEAM};
    let f = fleet_watching(&[TEAM]);
    // The same names in both namespaces: MediaApp live, StreamAuth studio, Secret studio-keys.
    let team_live = "metadata: {name: live}\nspec: {app: team-live, publish: {auth: key, authRef: {name: studio}}, service: {type: LoadBalancer}, webhooks: [{url: 'http://hooks.team-a.svc/in', secretRef: {name: hooks, key: hmac}}]}";
    let i = inputs(
        vec![
            media_app(LIVE_KEY, 20),
            media_app(&in_ns(TEAM, team_live), 10),
            // A namespace that is not watched is not served.
            media_app("metadata: {name: other, namespace: team-b}\nspec: {}", 5),
        ],
        vec![stream_auth(STUDIO_KEYS), stream_auth(&in_ns(TEAM, STUDIO_KEYS))],
        vec![
            keys_auth().remove(0),
            secret_in(TEAM, "studio-keys", &[("cam1", "k-team-SECRET")]),
            secret_in(TEAM, "hooks", &[("hmac", "H-TEAM")]),
        ],
    );
    let o = reconcile_for(&f, &i, Some("203.0.113.9"), &APPLIED);
    assert_eq!(o.served(), ["live", "team-live"]);
    // Each app's keys come from its own namespace, in its own fleet Secret key.
    let c = o.config();
    let keys_file = |app: &str| {
        let a = c.apps.iter().find(|a| a.name == app).unwrap();
        a.publish.keys_file.clone().unwrap().to_str().unwrap().to_string()
    };
    assert_eq!(keys_file("live"), "/etc/ferrocast/secrets/streamauth.studio.keys.yaml");
    assert_eq!(
        keys_file("team-live"),
        "/etc/ferrocast/secrets/streamauth.team-a_studio.keys.yaml"
    );
    assert_eq!(
        o.secret("streamauth.studio.keys.yaml").unwrap(),
        "cam1: k-cam1-SECRET\nstudio: k-studio-SECRET\n"
    );
    assert_eq!(
        o.secret("streamauth.team-a_studio.keys.yaml").unwrap(),
        "cam1: k-team-SECRET\n"
    );
    assert_eq!(o.secret("mediaapp.team-a_live.webhook.0").as_deref(), Some("H-TEAM"));
    assert!(
        !o.yaml().contains("SECRET") && !o.yaml().contains("H-TEAM"),
        "secret values only in the fleet Secret"
    );
    // Services in the fleet namespace (they select its pods), named per namespace, labelled
    // for pruning; only the fleet namespace's MediaApp can own its Service.
    let svc = &o.desired.services["team-a/live"];
    assert_eq!(
        (svc.metadata.name.as_deref(), svc.metadata.namespace.as_deref()),
        (Some("ferrocast-team-a-live"), Some("streaming"))
    );
    let labels = svc.metadata.labels.as_ref().unwrap();
    assert_eq!(
        (
            labels["ferrocast.io/mediaapp"].as_str(),
            labels["ferrocast.io/mediaapp-namespace"].as_str(),
            labels["ferrocast.io/fleet"].as_str()
        ),
        ("live", "team-a", "ferrocast")
    );
    assert_eq!(
        svc.metadata.owner_references, None,
        "owner references cannot cross namespaces"
    );
    assert_eq!(svc.spec.as_ref().unwrap().selector.as_ref(), Some(&f.selector));
    let own = &o.desired.services["live"];
    assert_eq!(own.metadata.name.as_deref(), Some("ferrocast-live"));
    assert_eq!(own.metadata.owner_references.as_ref().unwrap()[0].uid, "uid-live");
    // Statuses by namespace; the StreamAuths list their own namespace's users.
    assert_eq!((o.reason("live"), o.reason("team-a/live")), ("Ready", "Ready"));
    assert_eq!(
        o.statuses["team-a/live"].endpoints.as_ref().unwrap().rtmp,
        "rtmp://203.0.113.9:1935/team-live"
    );
    assert!(!o.statuses.contains_key("team-b/other"));
    assert_eq!(o.desired.stream_auths["team-a/studio"].used_by, ["live"]);
    assert_eq!(o.desired.stream_auths["studio"].used_by, ["live"]);
    // Without the watch, the same inputs serve the fleet namespace alone.
    assert_eq!(reconcile(&i, None, &APPLIED).served(), ["live"]);
}

#[test]
fn a_mediaapp_reaches_no_secret_or_streamauth_of_another_namespace() {
    use common::{fleet_watching, TEAM};
    let f = fleet_watching(&[TEAM]);
    // Everything referenced exists, but in the fleet namespace only.
    let fleet_side = vec![
        keys_auth().remove(0),
        tls_secret("live-tls", "live.example.com"),
        secret("hooks", &[("hmac", "H-FLEET")]),
    ];
    let cases = [
        (
            "authRef to a StreamAuth of the fleet namespace",
            "metadata: {name: a}\nspec: {publish: {auth: key, authRef: {name: studio}}}",
            vec![],
            "AuthRefNotFound",
            "StreamAuth studio not found",
        ),
        (
            "its StreamAuth's Secret is in the fleet namespace",
            "metadata: {name: a}\nspec: {publish: {auth: key, authRef: {name: own}}}",
            vec![stream_auth(&in_ns(
                TEAM,
                "metadata: {name: own}\nspec: {keys: {secretRef: {name: studio-keys}}}",
            ))],
            "SecretNotFound",
            "Secret studio-keys not found",
        ),
        (
            "a namespace/name reference",
            "metadata: {name: a}\nspec: {publish: {auth: key, authRef: {name: own}}}",
            vec![stream_auth(&in_ns(
                TEAM,
                "metadata: {name: own}\nspec: {keys: {secretRef: {name: streaming/studio-keys}}}",
            ))],
            "InvalidSpec",
            "\"streaming/studio-keys\" is not a Secret name",
        ),
        (
            "TLS Secret",
            "metadata: {name: a}\nspec: {tls: {secretName: live-tls, hosts: [live.example.com]}}",
            vec![],
            "InvalidTLS",
            "Secret live-tls not found",
        ),
        (
            "webhook key",
            "metadata: {name: a}\nspec: {webhooks: [{url: 'http://h/x', secretRef: {name: hooks, key: hmac}}]}",
            vec![],
            "SecretNotFound",
            "Secret hooks not found",
        ),
    ];
    for (case, ma, sas, reason, message) in cases {
        let i = inputs(vec![media_app(&in_ns(TEAM, ma), 10)], sas, fleet_side.clone());
        let o = reconcile_for(&f, &i, None, &APPLIED);
        assert_eq!(o.reason("team-a/a"), reason, "{case}: {}", o.message("team-a/a"));
        assert!(
            o.message("team-a/a").contains(message),
            "{case}: {}",
            o.message("team-a/a")
        );
        assert!(o.served().is_empty() || reason == "InvalidTLS", "{case}: fails closed");
        let values: Vec<String> = o.secret_keys().iter().filter_map(|k| o.secret(k)).collect();
        assert!(
            !values
                .iter()
                .any(|v| v.contains("SECRET") || v.contains("H-FLEET") || v.contains("PRIVATE")),
            "{case}: nothing of the fleet namespace's Secrets is copied"
        );
    }
}

#[test]
fn app_conflict_across_namespaces_keeps_the_older_mediaapp_whatever_the_order() {
    use common::{fleet_watching, TEAM};
    let f = fleet_watching(&[TEAM]);
    let ours = || media_app("metadata: {name: live}\nspec: {gopCache: false}", 10);
    let theirs = || media_app(&in_ns(TEAM, "metadata: {name: live}\nspec: {}"), 100);
    for apps in [vec![ours(), theirs()], vec![theirs(), ours()]] {
        let o = reconcile_for(&f, &inputs(apps, vec![], vec![]), None, &APPLIED);
        assert_eq!(o.served(), ["live"]);
        assert!(o.config().apps[0].gop_cache, "the older MediaApp's settings (team-a's)");
        assert_eq!((o.reason("team-a/live"), o.reason("live")), ("Ready", "AppConflict"));
        let ready = &o.statuses["live"].conditions[0];
        assert_eq!(ready.status, "False");
        assert!(
            ready
                .message
                .contains("app \"live\" is already claimed by MediaApp team-a/live"),
            "{}",
            ready.message
        );
    }
    // Created in the same second: the namespace, then the name, decides.
    let same = |ns: &str, name: &str| {
        media_app(
            &in_ns(ns, &format!("metadata: {{name: {name}}}\nspec: {{app: live}}")),
            10,
        )
    };
    for apps in [
        vec![same(TEAM, "a"), same("streaming", "b")],
        vec![same("streaming", "b"), same(TEAM, "a")],
    ] {
        let o = reconcile_for(&f, &inputs(apps, vec![], vec![]), None, &APPLIED);
        assert_eq!((o.reason("b"), o.reason("team-a/a")), ("Ready", "AppConflict"));
    }
}

#[test]
fn api_users_come_from_the_fleet_namespace_only() {
    use common::{fleet_watching, secret_in, TEAM};
    let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let i = inputs(
        vec![],
        vec![
            stream_auth("metadata: {name: admins}\nspec: {apiUsers: {secretRef: {name: admins}}}"),
            stream_auth(&in_ns(
                TEAM,
                "metadata: {name: admins}\nspec: {apiUsers: {secretRef: {name: admins}}}",
            )),
        ],
        vec![
            secret("admins", &[("ops", phc)]),
            secret_in(TEAM, "admins", &[("tenant", phc)]),
        ],
    );
    let o = reconcile_for(&fleet_watching(&[TEAM]), &i, None, &APPLIED);
    assert_eq!(o.secret("api.users.yaml").unwrap(), format!("ops: {phc}\n"));
    let ready = &o.desired.stream_auths["team-a/admins"].conditions[0];
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ApiUsersNotAllowed")
    );
    assert!(ready.message.contains("fleet namespace streaming"), "{}", ready.message);
    assert_eq!(o.desired.stream_auths["admins"].conditions[0].reason, "Reconciled");
}

#[test]
fn a_watched_namespace_gets_its_generated_certificate_in_the_fleet_namespace() {
    use common::{fleet_watching, TEAM};
    let f = fleet_watching(&[TEAM]);
    let ma = media_app(
        &in_ns(
            TEAM,
            "metadata: {name: live}\nspec: {tls: {hosts: [live.team.example]}}",
        ),
        10,
    );
    assert_eq!(f.generated_cert_secret(&ma.metadata), "team-a.live-tls-generated");
    let labelled = |labels: &[(&str, &str)]| {
        let mut s = tls_secret("team-a.live-tls-generated", "live.team.example");
        s.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        s
    };
    let ours = labelled(&[
        ("ferrocast.io/mediaapp", "live"),
        ("ferrocast.io/mediaapp-namespace", "team-a"),
        ("ferrocast.io/generated-certificate", "true"),
    ]);
    let o = reconcile_for(&f, &inputs(vec![ma.clone()], vec![], vec![ours]), None, &APPLIED);
    assert_eq!(o.reason("team-a/live"), "Ready");
    assert_eq!(
        o.desired.generated_certs,
        BTreeMap::from([("team-a/live".to_string(), vec!["live.team.example".to_string()])])
    );
    assert!(o
        .secret("mediaapp.team-a_live.tls.key")
        .unwrap()
        .contains("PRIVATE KEY"));
    // The generated certificate of a fleet-namespace MediaApp "live" is not this one's.
    let not_ours = labelled(&[
        ("ferrocast.io/mediaapp", "live"),
        ("ferrocast.io/generated-certificate", "true"),
    ]);
    let o = reconcile_for(&f, &inputs(vec![ma], vec![], vec![not_ours]), None, &APPLIED);
    assert_eq!(o.reason("team-a/live"), "InvalidTLS");
    assert!(
        o.message("team-a/live")
            .contains("not made by the operator for this MediaApp"),
        "{}",
        o.message("team-a/live")
    );
}

/// The cleanup command docs/kubernetes.md ("Uninstall") gives for after `helm uninstall`
/// selects every object the operator renders, per-app Services of watched namespaces'
/// MediaApps included (those outlive the release: their MediaApps stay, and a watched
/// namespace's MediaApp cannot own them), and no other fleet's.
#[test]
fn the_documented_uninstall_cleanup_selects_every_object_the_operator_makes() {
    let docs = std::fs::read_to_string(common::workspace().join("docs/kubernetes.md")).unwrap();
    let uninstall = &docs[docs.find("## Uninstall").expect("Uninstall section")..];
    let command = uninstall
        .lines()
        .find(|l| l.starts_with("kubectl -n streaming delete svc,configmap,secret -l "))
        .expect("a cleanup command deleting the operator's Services, ConfigMaps and Secrets");
    let selector: BTreeMap<&str, &str> = command
        .rsplit(' ')
        .next()
        .unwrap()
        .split(',')
        .map(|kv| kv.split_once('=').expect("equality selector"))
        .collect();
    let selects = |labels: &Option<BTreeMap<String, String>>| {
        let labels = labels.clone().unwrap_or_default();
        selector
            .iter()
            .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
    };
    let fleet = common::fleet_watching(&[common::TEAM]);
    let own = media_app("metadata: {name: live}\nspec: {service: {type: LoadBalancer}}", 10);
    let watched = media_app(
        &format!(
            "metadata: {{name: studio, namespace: {}}}\nspec: {{app: studio, service: {{type: LoadBalancer}}}}",
            common::TEAM
        ),
        10,
    );
    let i = inputs(vec![own, watched], vec![], vec![]);
    let desired = render(&fleet, &i).expect("render");
    assert_eq!(desired.services.len(), 2, "{:?}", desired.services.keys());
    for svc in desired.services.values() {
        assert!(selects(&svc.metadata.labels), "{:?}", svc.metadata);
    }
    assert!(selects(&desired.config_map.metadata.labels));
    assert!(selects(&desired.secret.metadata.labels));
    let other = Fleet {
        name: "studio-b".into(),
        ..fleet.clone()
    };
    let theirs = render(&other, &i).expect("render");
    assert!(
        theirs.services.values().all(|s| !selects(&s.metadata.labels)),
        "another release's objects are left alone"
    );
}
