"""What the rendered objects must say: the contracts with the operator and the server, probes,
volumes, security, disruption handling, Services from values, RBAC and monitoring."""

from __future__ import annotations

import re

from conftest import NAMESPACE, RELEASE, VALUE_SETS, find, merged_values, objects, one

SERVER_SELECTOR = {
    "app.kubernetes.io/name": "ferrocast",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "server",
}


def server_pod(values: dict, fullname: str = RELEASE) -> dict:
    return one(objects(values), "Deployment", f"{fullname}-server")["spec"]["template"]


def container(pod: dict, name: str) -> dict:
    (c,) = [c for c in pod["spec"]["containers"] if c["name"] == name]
    return c


def env(c: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def port_number(c: dict, name: str) -> int:
    (p,) = [p["containerPort"] for p in c["ports"] if p["name"] == name]
    return p


def test_server_pods_run_the_server_on_the_operator_config():
    pod = server_pod({})
    c = container(pod, "server")
    assert c["image"] == "ferrocast:0.1.0"
    assert "command" not in c, "the image's entrypoint is the server"
    assert c["args"] == ["--config", "/etc/ferrocast/config/ferrocast.yaml",
                         "--base-config", "/etc/ferrocast/base/ferrocast.yaml"]
    for k, v in SERVER_SELECTOR.items():
        assert pod["metadata"]["labels"][k] == v
    # Probes on the admin port, never on a public one.
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert port_number(c, "admin") == 9090
    # RTMPS and HTTPS are declared even without server.tls.enabled: per-app Services target
    # them by name when a MediaApp brings TLS.
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "rtmp": 1935, "http": 8000, "rtmps": 1936, "https": 8443, "admin": 9090}


def test_server_pods_mount_the_operator_configmap_and_secret_non_optional():
    pod = server_pod({})
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"] == {"name": "ferrocast-server-config", "optional": False}
    assert volumes["secrets"]["secret"]["secretName"] == "ferrocast-server-secrets"
    assert volumes["secrets"]["secret"]["optional"] is False
    mounts = {m["name"]: m for m in container(pod, "server")["volumeMounts"]}
    assert mounts["config"] == {"name": "config", "mountPath": "/etc/ferrocast/config", "readOnly": True}
    assert mounts["secrets"] == {"name": "secrets", "mountPath": "/etc/ferrocast/secrets", "readOnly": True}
    # The start-only settings come with the pod (--base-config), from the chart's base
    # config, so listeners and probes agree even while the operator's config lags.
    assert mounts["base-config"] == {"name": "base-config", "mountPath": "/etc/ferrocast/base", "readOnly": True}
    assert volumes["base-config"]["configMap"] == {"name": "ferrocast-server-base"}
    # The chart never writes them: the operator creates and owns both.
    names = {(o["kind"], o["metadata"]["name"]) for o in objects({})}
    assert ("ConfigMap", "ferrocast-server-config") not in names
    assert ("Secret", "ferrocast-server-secrets") not in names
    assert not find(objects({}), "Secret"), "the chart renders no Secret at all"


def test_pods_are_non_root_with_a_read_only_root_filesystem():
    objs = objects({})
    for name in ["ferrocast-server", "ferrocast-operator"]:
        spec = one(objs, "Deployment", name)["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], name
    server = one(objs, "Deployment", "ferrocast-server")["spec"]["template"]["spec"]
    assert server["automountServiceAccountToken"] is False, "the server never calls the API"


def test_rollouts_let_live_streams_end_cleanly():
    for values, pre_stop, drain in [({}, 10, 15), (VALUE_SETS["tuned"], 20, 60)]:
        v = merged_values(values)
        fullname = v.get("fullnameOverride") or RELEASE
        objs = objects(values)
        deploy = one(objs, "Deployment", f"{fullname}-server")
        pod = deploy["spec"]["template"]["spec"]
        c = container(deploy["spec"]["template"], "server")
        assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": pre_stop}}
        grace = v["server"]["shutdown"]["graceSeconds"]
        # Drain, then the grace in which streams end and recordings are finalized and uploaded.
        assert pod["terminationGracePeriodSeconds"] == pre_stop + drain + grace + 5
        base = one(objs, "ConfigMap", f"{fullname}-server-base")["data"]["ferrocast.yaml"]
        assert f"drain_secs: {drain}" in base
        assert f"shutdown_grace_secs: {grace}" in base
        # A new pod is ready before an old one starts draining.
        assert deploy["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_no_pre_stop_hook_without_a_sleep():
    deploy = one(objects({"server": {"shutdown": {"preStopSleepSeconds": 0, "drainSeconds": 30}}}),
                 "Deployment", "ferrocast-server")
    assert "lifecycle" not in container(deploy["spec"]["template"], "server")
    assert deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30 + 60 + 5


def test_pod_disruption_budget_covers_the_server_pods():
    pdb = one(objects({}), "PodDisruptionBudget", "ferrocast-server")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": SERVER_SELECTOR}}
    pdb = one(objects(VALUE_SETS["tuned"]), "PodDisruptionBudget", "media-server")
    assert pdb["spec"]["minAvailable"] == 2 and "maxUnavailable" not in pdb["spec"]
    assert not find(objects({"server": {"podDisruptionBudget": {"enabled": False}}}), "PodDisruptionBudget")


def test_server_pods_spread_over_nodes_and_zones():
    spread = server_pod({})["spec"]["topologySpreadConstraints"]
    assert [t["topologyKey"] for t in spread] == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    assert all(t["labelSelector"]["matchLabels"] == SERVER_SELECTOR for t in spread)
    assert all(t["whenUnsatisfiable"] == "ScheduleAnyway" for t in spread)
    tuned = server_pod(VALUE_SETS["tuned"], "media")["spec"]
    (t,) = tuned["topologySpreadConstraints"]
    assert t["maxSkew"] == 2 and t["whenUnsatisfiable"] == "DoNotSchedule"
    assert t["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"
    assert tuned["nodeSelector"] == {"node-role/media": "true"}
    assert tuned["tolerations"][0]["key"] == "media"


def test_shared_service_is_a_loadbalancer_for_rtmp_and_http_by_default():
    svc = one(objects({}), "Service", "ferrocast-server")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["selector"] == SERVER_SELECTOR
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("rtmp", 1935, "rtmp"), ("http", 8000, "http")]
    assert "loadBalancerSourceRanges" not in svc["spec"]
    assert all("nodePort" not in p for p in svc["spec"]["ports"])


def test_shared_service_annotations_and_source_ranges_come_from_values():
    svc = one(objects(VALUE_SETS["loadbalancer-aws"]), "Service", "ferrocast-server")
    assert svc["metadata"]["annotations"] == VALUE_SETS["loadbalancer-aws"]["server"]["service"]["annotations"]
    assert svc["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24", "198.51.100.7/32"]
    assert svc["spec"]["loadBalancerClass"] == "service.k8s.aws/nlb"
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("rtmp", 1935), ("rtmps", 1936), ("http", 8000), ("https", 8443)]


def test_nodeport_and_clusterip_services():
    svc = one(objects(VALUE_SETS["nodeport"]), "Service", "ferrocast-server")
    assert svc["spec"]["type"] == "NodePort"
    assert {p["name"]: p.get("nodePort") for p in svc["spec"]["ports"]} == {"rtmp": 31935, "http": 30080}
    assert "loadBalancerSourceRanges" not in svc["spec"] and "loadBalancerClass" not in svc["spec"]
    svc = one(objects(VALUE_SETS["clusterip"]), "Service", "ferrocast-server")
    assert svc["spec"]["type"] == "ClusterIP"
    assert "externalTrafficPolicy" not in svc["spec"]
    assert not find(objects({"server": {"service": {"enabled": False}}}), "Service", "ferrocast-server")


def test_tls_opens_rtmps_and_https_everywhere():
    objs = objects(VALUE_SETS["tls"])
    c = container(one(objs, "Deployment", "ferrocast-server")["spec"]["template"], "server")
    assert port_number(c, "rtmps") == 1936 and port_number(c, "https") == 8443
    svc = one(objs, "Service", "ferrocast-server")
    assert [p["name"] for p in svc["spec"]["ports"]] == ["rtmp", "rtmps", "http", "https"]
    headless = one(objs, "Service", "ferrocast-server-headless")
    assert {"rtmps", "https"} <= {p["name"] for p in headless["spec"]["ports"]}


def test_headless_service_lists_every_server_pod():
    svc = one(objects({}), "Service", "ferrocast-server-headless")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == SERVER_SELECTOR
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"rtmp": 1935, "http": 8000, "admin": 9090}


def test_hpa_replaces_the_replica_count():
    objs = objects(VALUE_SETS["hpa"])
    hpa = one(objs, "HorizontalPodAutoscaler", "ferrocast-server")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ferrocast-server"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]} == {
        "cpu": 70, "memory": 80}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert "replicas" not in one(objs, "Deployment", "ferrocast-server")["spec"]
    assert not find(objects({}), "HorizontalPodAutoscaler")
    assert one(objects({}), "Deployment", "ferrocast-server")["spec"]["replicas"] == 3, "a fleet by default"


def test_operator_gets_every_setting_of_the_contract():
    objs = objects({})
    pod = one(objs, "Deployment", "ferrocast-operator")["spec"]["template"]
    c = container(pod, "operator")
    assert c["command"] == ["/usr/local/bin/ferrocast-operator"]
    e = env(c)
    assert e["FERROCAST_NAMESPACE"] == NAMESPACE
    # Per-release names and field manager, so two releases in one namespace never collide.
    assert e["FERROCAST_FLEET"] == "ferrocast"
    assert e["FERROCAST_SERVE_UNLABELLED"] == "true"
    assert e["FERROCAST_WATCH_NAMESPACES"] == "", "the release namespace only"
    assert e["FERROCAST_CONFIG_MAP"] == "ferrocast-server-config"
    assert e["FERROCAST_SECRET"] == "ferrocast-server-secrets"
    assert e["FERROCAST_SERVER_ADMIN_PORT"] == "9090"
    assert e["FERROCAST_METRICS_ADDR"] == "0.0.0.0:8080"
    assert e["FERROCAST_LOG_JSON"] == "true"
    assert e["FERROCAST_LEASE_NAME"] == "ferrocast-operator"
    assert e["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert e["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # The selector string selects exactly the server pods.
    selector = dict(kv.split("=", 1) for kv in e["FERROCAST_SERVER_SELECTOR"].split(","))
    assert selector == SERVER_SELECTOR
    server_labels = one(objs, "Deployment", "ferrocast-server")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= server_labels.items()
    assert not selector.items() <= pod["metadata"]["labels"].items(), "must not select the operator"
    # The base config it extends is mounted where FERROCAST_BASE_CONFIG points.
    (mount,) = c["volumeMounts"]
    assert e["FERROCAST_BASE_CONFIG"] == mount["mountPath"] + "/ferrocast.yaml"
    (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    base = one(objs, "ConfigMap", vol["configMap"]["name"])
    assert base["metadata"]["name"] == "ferrocast-server-base" and "ferrocast.yaml" in base["data"]
    # Probes and metrics on the metrics port.
    assert port_number(c, "metrics") == 8080
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    svc = one(objs, "Service", "ferrocast-operator-metrics")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    assert pod["spec"]["serviceAccountName"] == "ferrocast-operator"


def test_a_changed_base_config_rolls_operator_and_servers():
    def checksums(values):
        objs = objects(values)
        return [one(objs, "Deployment", n)["spec"]["template"]["metadata"]["annotations"]["checksum/base-config"]
                for n in ["ferrocast-operator", "ferrocast-server"]]
    before = checksums({})
    after = checksums({"server": {"config": {"hub": {"play_wait_secs": 5}}}})
    assert before[0] == before[1] and after[0] == after[1] and before != after


def test_tuned_values_reach_the_pods():
    objs = objects(VALUE_SETS["tuned"])
    op = one(objs, "Deployment", "media-operator")
    assert op["spec"]["replicas"] == 2
    c = container(op["spec"]["template"], "operator")
    assert c["image"] == "registry.example.com/ferrocast:1.2.3"
    assert env(c)["RUST_LOG"] == "debug" and env(c)["FERROCAST_LOG_JSON"] == "false"
    assert env(c)["FERROCAST_CONFIG_MAP"] == "media-server-config"
    assert env(c)["FERROCAST_SERVER_ADMIN_PORT"] == "19090"
    assert env(c)["FERROCAST_FLEET"] == "media"
    op_spec = op["spec"]["template"]["spec"]
    (spread,) = op_spec["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert {"name": "ca", "configMap": {"name": "corp-ca"}} in op_spec["volumes"]
    assert {"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True} in c["volumeMounts"]
    server = one(objs, "Deployment", "media-server")
    assert server["spec"]["replicas"] == 3
    spec = server["spec"]["template"]["spec"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert {"name": "hooks", "secret": {"secretName": "hooks-hmac"}} in spec["volumes"]
    assert any(m["mountPath"] == "/etc/ferrocast/hooks" for m in spec["containers"][0]["volumeMounts"])
    for o in objs:
        if o["kind"] != "CustomResourceDefinition":
            assert o["metadata"]["labels"]["team"] == "video", f"{o['kind']} {o['metadata']['name']}"


def test_operator_rbac_is_least_privilege():
    objs = objects({})
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    role = one(objs, "Role", "ferrocast-operator")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): sorted(r["verbs"]) for r in role["rules"]}
    # Exactly what the operator calls (the tower-test scenarios in operator/tests/controller.rs
    # show each request): watches are list+watch; every write is a server-side apply (patch),
    # and an apply that creates the object is authorized as create too (Kubernetes API
    # concepts, "Patch and apply"), so what it creates by apply also needs create.
    assert rules == {
        (("ferrocast.io",), ("mediaapps", "streamauths")): ["list", "watch"],
        (("ferrocast.io",), ("mediaapps/status", "streamauths/status")): ["patch"],
        (("",), ("configmaps",)): ["create", "patch"],
        (("",), ("secrets",)): ["create", "delete", "list", "patch", "watch"],
        (("",), ("services",)): ["create", "delete", "get", "list", "patch", "watch"],
        (("",), ("pods",)): ["list"],
        (("events.k8s.io",), ("events",)): ["create", "patch"],
        (("coordination.k8s.io",), ("leases",)): ["create", "get", "list", "update"],
    }
    binding = one(objs, "RoleBinding", "ferrocast-operator")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ferrocast-operator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ferrocast-operator", "namespace": NAMESPACE}]
    assert one(objs, "ServiceAccount", "ferrocast-operator")


def test_watched_namespaces_get_a_role_with_only_what_the_operator_calls_there():
    assert not [o for o in objects({}) if o["kind"] == "Role" and o["metadata"]["namespace"] != NAMESPACE]
    objs = objects(VALUE_SETS["watch-namespaces"])
    e = env(container(one(objs, "Deployment", "ferrocast-operator")["spec"]["template"], "operator"))
    assert e["FERROCAST_WATCH_NAMESPACES"] == "team-a,team-b", "the release namespace is not repeated"
    assert e["FERROCAST_NAMESPACE"] == NAMESPACE, "the fleet stays in the release namespace"
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    roles = {o["metadata"]["namespace"]: o for o in find(objs, "Role", "ferrocast-operator")}
    bindings = {o["metadata"]["namespace"]: o for o in find(objs, "RoleBinding", "ferrocast-operator")}
    assert sorted(roles) == sorted(bindings) == [NAMESPACE, "team-a", "team-b"]
    for ns in ["team-a", "team-b"]:
        rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): sorted(r["verbs"]) for r in roles[ns]["rules"]}
        # Read what it serves and the Secrets they reference; write their status and events.
        # Nothing of the fleet (ConfigMaps, Services, pods, Leases) and no Secret writes there.
        assert rules == {
            (("ferrocast.io",), ("mediaapps", "streamauths")): ["list", "watch"],
            (("ferrocast.io",), ("mediaapps/status", "streamauths/status")): ["patch"],
            (("",), ("secrets",)): ["list", "watch"],
            (("events.k8s.io",), ("events",)): ["create", "patch"],
        }, ns
        assert bindings[ns]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                           "name": "ferrocast-operator"}
        assert bindings[ns]["subjects"] == [{"kind": "ServiceAccount", "name": "ferrocast-operator",
                                             "namespace": NAMESPACE}]
    # The release namespace keeps the fleet's Role unchanged.
    assert roles[NAMESPACE]["rules"] == one(objects({}), "Role", "ferrocast-operator")["rules"]


def test_service_monitors_scrape_the_server_admin_port_and_the_operator():
    objs = objects(VALUE_SETS["servicemonitor"])
    services = find(objs, "Service")
    for name, port in [("ferrocast-server", "admin"), ("ferrocast-operator", "metrics")]:
        sm = one(objs, "ServiceMonitor", name)
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        (ep,) = sm["spec"]["endpoints"]
        assert ep["port"] == port and ep["path"] == "/metrics" and ep["interval"] == "30s"
        selected = [s for s in services
                    if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert [s["metadata"]["name"] for s in selected] == [
            "ferrocast-server-headless" if port == "admin" else "ferrocast-operator-metrics"]
        assert port in [p["name"] for p in selected[0]["spec"]["ports"]]
    server_sm = one(objs, "ServiceMonitor", "ferrocast-server")
    assert server_sm["spec"]["endpoints"][0]["relabelings"][0]["targetLabel"] == "node"
    assert not find(objects({}), "ServiceMonitor")


def test_pod_monitors_scrape_the_pods_directly():
    objs = objects(VALUE_SETS["podmonitor"])
    for name, deploy, port in [("ferrocast-server", "ferrocast-server", "admin"),
                               ("ferrocast-operator", "ferrocast-operator", "metrics")]:
        pm = one(objs, "PodMonitor", name)
        pod = one(objs, "Deployment", deploy)["spec"]["template"]
        assert pm["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert pm["spec"]["podMetricsEndpoints"][0]["port"] == port
        assert port in [p["name"] for c in pod["spec"]["containers"] for p in c["ports"]]
    assert not find(objs, "ServiceMonitor")


def test_scrape_annotations_follow_the_value():
    pod = server_pod({})
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    pod = server_pod({"metrics": {"scrapeAnnotations": False}})
    assert not any(k.startswith("prometheus.io/") for k in pod["metadata"]["annotations"])


def test_prometheus_rule_alerts():
    objs = objects(VALUE_SETS["servicemonitor"])
    rule = one(objs, "PrometheusRule", "ferrocast")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {
        "FerrocastPublisherGone", "FerrocastSlowReaderDrops", "FerrocastAuthFailureSpike",
        "FerrocastWebhookFailures", "FerrocastWebhookDeliveriesDropped",
        "FerrocastOperatorReconcileErrors", "FerrocastMediaAppNotReady", "FerrocastOperatorNoLeader",
        "FerrocastServerTargetMissing", "FerrocastOperatorTargetMissing", "FerrocastCertificateExpiringSoon"}
    for name, r in alerts.items():
        assert r["labels"]["severity"] in {"warning", "critical"}, name
        assert r["annotations"]["summary"] and r["annotations"]["description"], name
        assert r["expr"].count("(") == r["expr"].count(")"), f"{name}: unbalanced: {r['expr']}"
        assert r["expr"].count("{") == r["expr"].count("}"), f"{name}: unbalanced: {r['expr']}"
    # Prometheus templating reaches Prometheus untouched by Helm.
    assert "{{ $labels.stream }}" in alerts["FerrocastPublisherGone"]["annotations"]["summary"]
    assert alerts["FerrocastAuthFailureSpike"]["expr"].strip().endswith("> 1")
    # A target that vanishes is an alert, not silence: series every server and operator
    # always exports, absent from this release's pods (another release's pods in the same
    # namespace do not hide it: Deployment pods are <deployment>-<hash>-<suffix>).
    assert alerts["FerrocastServerTargetMissing"]["expr"].strip() == (
        f'absent_over_time(ferrocast_config_info{{namespace="{NAMESPACE}",pod=~"ferrocast-server-[a-z0-9]+-[a-z0-9]+"}}[10m])')
    assert alerts["FerrocastOperatorTargetMissing"]["expr"].strip() == (
        f'absent_over_time(ferrocast_operator_leader{{namespace="{NAMESPACE}",pod=~"ferrocast-operator-[a-z0-9]+-[a-z0-9]+"}}[10m])')
    server_pods = re.compile(r"ferrocast-server-[a-z0-9]+-[a-z0-9]+")
    assert server_pods.fullmatch("ferrocast-server-7d9f8b6c5-x2k4q")
    assert not server_pods.fullmatch("ferrocast-server-server-7d9f8b6c5-x2k4q"), "release ferrocast-server's pods"
    (second,) = one(objects({**VALUE_SETS["second-release"], **VALUE_SETS["servicemonitor"]}),
                    "PrometheusRule", "studio-b")["spec"]["groups"]
    second = {r["alert"]: r for r in second["rules"]}
    assert 'pod=~"studio-b-server-' in second["FerrocastServerTargetMissing"]["expr"]
    # Another release's leader in the same namespace does not hide that this one has none.
    assert alerts["FerrocastOperatorNoLeader"]["expr"].strip() == (
        f'max(ferrocast_operator_leader{{namespace="{NAMESPACE}",pod=~"ferrocast-operator-[a-z0-9]+-[a-z0-9]+"}}) == 0')
    assert 'pod=~"studio-b-operator-' in second["FerrocastOperatorNoLeader"]["expr"]
    assert "ferrocast_operator_certificate_expiry_timestamp_seconds" in alerts["FerrocastCertificateExpiringSoon"]["expr"]
    assert alerts["FerrocastCertificateExpiringSoon"]["expr"].strip().endswith("< 14 * 86400")

    tuned = {"metrics": {"prometheusRule": {
        "enabled": True, "disabled": ["FerrocastAuthFailureSpike"], "additionalRuleLabels": {"team": "video"},
        "severity": {"warning": "page-later"},
        "thresholds": {"slowReaderDropsPerPlayerPerSecond": 0.5},
        "additionalRules": [{"record": "ferrocast:players:sum", "expr": "sum(ferrocast_stream_players)"}]}}}
    (group,) = one(objects(tuned), "PrometheusRule", "ferrocast")["spec"]["groups"]
    alerts = {r.get("alert") or r.get("record"): r for r in group["rules"]}
    assert "FerrocastAuthFailureSpike" not in alerts
    assert alerts["FerrocastSlowReaderDrops"]["expr"].strip().endswith("> 0.5")
    assert alerts["FerrocastSlowReaderDrops"]["labels"] == {"severity": "page-later", "team": "video"}
    assert alerts["ferrocast:players:sum"]["expr"] == "sum(ferrocast_stream_players)"
    assert not find(objects({}), "PrometheusRule")


def test_dashboard_configmap_is_labelled_for_the_grafana_sidecar():
    cm = one(objects({}), "ConfigMap", "ferrocast-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "ferrocast.json" in cm["data"]
    cm = one(objects(VALUE_SETS["tuned"]), "ConfigMap", "media-dashboard")
    assert cm["metadata"]["labels"]["my_dashboards"] == "yes"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Streaming"}
    assert not find(objects({"grafana": {"dashboards": {"enabled": False}}}), "ConfigMap", "ferrocast-dashboard")


def test_the_rest_api_stays_off_the_public_service_by_default():
    import yaml as _yaml
    cm = one(objects({}), "ConfigMap", "ferrocast-server-base")
    assert _yaml.safe_load(cm["data"]["ferrocast.yaml"])["api"]["listener"] == "admin"
    # The public Service carries the media ports only; the admin port is on the headless one.
    svc = one(objects({}), "Service", "ferrocast-server")
    assert {p["name"] for p in svc["spec"]["ports"]} == {"rtmp", "http"}
    cm = one(objects({"server": {"config": {"api": {"listener": "public"}}}}), "ConfigMap", "ferrocast-server-base")
    assert _yaml.safe_load(cm["data"]["ferrocast.yaml"])["api"]["listener"] == "public"


def test_network_policies_guard_the_admin_ports():
    assert not find(objects({}), "NetworkPolicy"), "off by default"
    objs = objects(VALUE_SETS["networkpolicy"])
    server = one(objs, "NetworkPolicy", "ferrocast-server")
    assert server["spec"]["podSelector"]["matchLabels"] == SERVER_SELECTOR
    public, admin = server["spec"]["ingress"]
    assert "from" not in public, "the media ports are public"
    assert {p["port"] for p in public["ports"]} == {1935, 1936, 8000, 8443}
    assert admin["ports"] == [{"port": 9090, "protocol": "TCP"}]
    peers = admin["from"]
    assert {"podSelector": {"matchLabels": {**SERVER_SELECTOR, "app.kubernetes.io/component": "operator"}}} in peers
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in peers
    operator = one(objs, "NetworkPolicy", "ferrocast-operator")
    assert operator["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = {(p["port"], p["protocol"]) for rule in operator["spec"]["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (9090, "TCP"), (443, "TCP"), (6443, "TCP")} <= egress_ports
