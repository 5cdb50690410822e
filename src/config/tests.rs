//! Table-driven tests of the configuration parser, flag overlay and conntrack computation.

use std::time::Duration;

use ipvs_netlink::ipvs::Scheduler;

use super::conntrack::{self, ConntrackSettings};
use super::*;
use crate::sysctl::Sysctl;

const HEAD: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

fn parse(body: &str) -> Result<Parsed, ConfigError> {
    parse_str(&format!("{HEAD}{body}"))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn go_durations() {
    let ok: &[(&str, Duration)] = &[
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("30s", secs(30)),
        ("1m0s", secs(60)),
        ("15m", secs(900)),
        ("1h2m3s", secs(3723)),
        ("24h0m0s", secs(86400)),
        ("1.5s", Duration::from_millis(1500)),
        ("300ms", Duration::from_millis(300)),
        ("2us", Duration::from_micros(2)),
        ("2µs", Duration::from_micros(2)),
        ("7ns", Duration::from_nanos(7)),
        (".5m", secs(30)),
        ("+5s", secs(5)),
        ("-0s", Duration::ZERO),
    ];
    for (s, want) in ok {
        assert_eq!(duration::parse(s), Ok(*want), "{s}");
    }
    for bad in [
        "",
        "30",
        "s",
        "1x",
        "1.s.",
        "1h-1m",
        "--1s",
        "1 s",
        "abc",
        "1e3s",
        ".s",
        "9999999999h",
    ] {
        let e = duration::parse(bad).unwrap_err();
        assert!(e.contains("invalid duration"), "{bad}: {e}");
    }
    assert!(
        duration::parse("-1s")
            .unwrap_err()
            .contains("greater than or equal to 0")
    );
    for (d, s) in [
        (Duration::ZERO, "0s"),
        (secs(30), "30s"),
        (secs(60), "1m0s"),
        (secs(86400), "24h0m0s"),
        (Duration::from_millis(1500), "1.5s"),
        (Duration::from_millis(300), "300ms"),
    ] {
        assert_eq!(duration::format(d), s);
        assert_eq!(duration::parse(s), Ok(d), "round trip {s}");
    }
}

#[test]
fn duration_overflow_is_an_error_not_a_wrap() {
    // Regression: the fraction was added unchecked, so this panicked with
    // overflow checks and wrapped to 444ns without them.
    for s in [
        "340282366920938463463374607431768211.9us",
        "340282366920938463463374607431768211us",
        "9223372036854775807h",
        "2562047h47m16.854775808s",
        "9223372036854775808ns",
        "99999999999999999999999999999999999999999999999999ns",
        "1h9223372036854775807ns",
        "-9223372036854775808ns",
    ] {
        let e = duration::parse_signed(s).unwrap_err();
        assert!(e.contains("duration out of range"), "{s}: {e}");
        assert!(e.contains(s), "{s}: {e}");
    }
    // The largest Go duration still parses, spelled either way.
    let max = Duration::new(9_223_372_036, 854_775_807);
    assert_eq!(duration::parse("9223372036854775807ns"), Ok(max));
    assert_eq!(duration::parse("2562047h47m16.854775807s"), Ok(max));
    assert_eq!(duration::format(max), "2562047h47m16.854775807s");
    // Many fraction digits: those below a nanosecond are dropped, as in Go.
    let long_frac = format!("1.{}s", "9".repeat(500));
    assert_eq!(
        duration::parse(&long_frac),
        Ok(Duration::new(1, 999_999_999))
    );
    assert_eq!(
        duration::parse("0.0000000019s"),
        Ok(Duration::from_nanos(1))
    );
    let long_zeros = format!("{}1s", "0".repeat(300));
    assert_eq!(duration::parse(&long_zeros), Ok(secs(1)));
}

#[test]
fn defaults_match_upstream() {
    let p = parse("").unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let s = p.values.resolve().unwrap();
    assert_eq!(s.sync_period, secs(30));
    assert_eq!(s.min_sync_period, Duration::ZERO);
    assert_eq!(s.proxy, ProxyConfig::default());
    assert_eq!(s.healthz_bind_address, "0.0.0.0:10256".parse().unwrap());
    assert_eq!(s.metrics_bind_address, "127.0.0.1:10249".parse().unwrap());
    assert_eq!(s.hostname_override, None);
    assert_eq!(s.kubeconfig, None);
    assert_eq!(s.conntrack, ConntrackSettings::default());
    assert_eq!(s.conntrack.max_per_core, 32768);
    assert_eq!(s.conntrack.min, 131072);
}

const FULL: &str = r#"
mode: ipvs
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
hostnameOverride: node-1
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: "[::]:10249"
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
detectLocalMode: ClusterCIDR
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
nodePortAddresses: ["192.168.0.0/16"]
iptables:
  masqueradeAll: true
  masqueradeBit: 13
ipvs:
  scheduler: wlc
  syncPeriod: 1m0s
  minSyncPeriod: 2s
  excludeCIDRs: ["10.0.0.0/8", "fd00::/8"]
  strictARP: true
  tcpTimeout: 15m
  tcpFinTimeout: 2m
  udpTimeout: 300s
conntrack:
  maxPerCore: 0
  min: 1000
  tcpEstablishedTimeout: 1h
  tcpCloseWaitTimeout: 30s
  tcpBeLiberal: true
  udpTimeout: 30s
  udpStreamTimeout: 2m
"#;

#[test]
fn every_field() {
    let p = parse(FULL).unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let s = p.values.resolve().unwrap();
    assert_eq!(s.proxy.scheduler, Scheduler::WeightedLeastConnection);
    assert_eq!(s.sync_period, secs(60));
    assert_eq!(s.min_sync_period, secs(2));
    assert_eq!(
        s.proxy.exclude_cidrs,
        vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
    );
    assert!(s.proxy.strict_arp);
    assert_eq!(
        (
            s.proxy.timeouts.tcp,
            s.proxy.timeouts.tcp_fin,
            s.proxy.timeouts.udp
        ),
        (900, 120, 300)
    );
    assert!(s.proxy.masquerade_all);
    assert_eq!(s.proxy.masquerade_mark(), 1 << 13);
    assert_eq!(s.proxy.cluster_cidrs.len(), 2);
    assert_eq!(
        s.proxy.node_port_addresses,
        NodePortAddresses::Cidrs(vec!["192.168.0.0/16".parse().unwrap()])
    );
    assert_eq!(s.hostname_override.as_deref(), Some("node-1"));
    assert_eq!(
        s.kubeconfig,
        Some(PathBuf::from("/var/lib/kube-proxy/kubeconfig.conf"))
    );
    assert_eq!(s.metrics_bind_address, "[::]:10249".parse().unwrap());
    assert_eq!(
        s.conntrack,
        ConntrackSettings {
            max_per_core: 0,
            min: 1000,
            tcp_established_timeout: secs(3600),
            tcp_close_wait_timeout: secs(30),
            tcp_be_liberal: true,
            udp_timeout: secs(30),
            udp_stream_timeout: secs(120),
        }
    );
}

#[test]
fn json_documents_parse_too() {
    let p = parse_str(
        r#"{"apiVersion":"kubeproxy.config.k8s.io/v1alpha1","kind":"KubeProxyConfiguration",
	"mode":"ipvs","ipvs":{"scheduler":"sh","syncPeriod":"45s"}}"#,
    )
    .unwrap();
    assert_eq!(p.values.scheduler, Some(Scheduler::SourceHashing));
    assert_eq!(p.values.sync_period, Some(secs(45)));
}

#[test]
fn kubeadm_style_zero_values_mean_defaults() {
    // kubeadm writes zero values for everything; upstream defaulting fills them in.
    let p = parse(
        "bindAddress: \"\"\nfeatureGates: {}\nportRange: \"\"\nenableProfiling: false\noomScoreAdj: null\n\
         mode: \"\"\nhealthzBindAddress: \"\"\nmetricsBindAddress: \"\"\nclusterCIDR: \"\"\nnodePortAddresses: null\n\
         ipvs: {syncPeriod: 0s, minSyncPeriod: 0s, scheduler: \"\", excludeCIDRs: null, tcpTimeout: 0s}\n\
         iptables: {masqueradeBit: null, masqueradeAll: false, syncPeriod: 0s, minSyncPeriod: 0s}\n\
         nftables: {masqueradeBit: null, masqueradeAll: false, syncPeriod: 0s}\n\
         winkernel: {enableDSR: false, networkName: \"\"}\n\
         conntrack: {maxPerCore: null, min: null, tcpEstablishedTimeout: null}\n",
    )
    .unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let s = p.values.resolve().unwrap();
    assert_eq!(s.sync_period, secs(30));
    assert_eq!(s.proxy, ProxyConfig::default());
    assert_eq!(s.conntrack, ConntrackSettings::default());
}

#[test]
fn unimplemented_fields_are_warnings() {
    let cases: &[(&str, &str)] = &[
        ("iptables: {syncPeriod: 10s}", "iptables.syncPeriod"),
        (
            "iptables: {localhostNodePorts: true}",
            "iptables.localhostNodePorts",
        ),
        ("nftables: {masqueradeBit: 14}", "nftables"),
        ("winkernel: {enableDSR: true}", "winkernel"),
        ("clientConnection: {qps: 50}", "clientConnection.qps"),
        ("featureGates: {Foo: true}", "featureGates"),
        ("portRange: 30000-32767", "portRange"),
        ("bindAddressHardFail: true", "bindAddressHardFail"),
        ("oomScoreAdj: -999", "oomScoreAdj"),
        ("configSyncPeriod: 15m", "configSyncPeriod"),
        ("enableProfiling: true", "enableProfiling"),
        ("logging: {format: json}", "logging"),
        ("bindAddress: 10.0.0.1", "bindAddress"),
    ];
    for (body, path) in cases {
        let p = parse(&format!("{body}\n")).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(
            p.warnings,
            vec![format!(
                "{path} is not implemented by kube-ipvs and is ignored"
            )],
            "{body}"
        );
    }
}

#[test]
fn unknown_fields_name_their_path() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "ipvs: {syncperiod: 5s}",
            "ipvs.syncperiod",
            "did you mean \"syncPeriod\"",
        ),
        ("ipvs: {bogus: 1}", "ipvs.bogus", "ipvs accepts: syncPeriod"),
        (
            "conntrack: {max: 1}",
            "conntrack.max",
            "conntrack accepts: maxPerCore",
        ),
        ("detectLocal: {x: y}", "detectLocal.x", "bridgeInterface"),
        (
            "clientConnection: {token: x}",
            "clientConnection.token",
            "kubeconfig",
        ),
        (
            "masqueradeAll: true",
            "masqueradeAll",
            "KubeProxyConfiguration accepts",
        ),
        (
            "iptables: {masqueradebit: 1}",
            "iptables.masqueradebit",
            "did you mean",
        ),
    ];
    for (body, path, msg) in cases {
        let e = parse(&format!("{body}\n")).unwrap_err();
        assert_eq!(e.path, *path, "{body}: {e}");
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(e.message.contains(msg), "{body}: {e}");
    }
}

#[test]
fn invalid_values_name_path_and_accepted_values() {
    let cases: &[(&str, &str, &str)] = &[
        ("ipvs: {syncPeriod: 30}", "ipvs.syncPeriod", "Go duration"),
        ("ipvs: {syncPeriod: fast}", "ipvs.syncPeriod", "\"30s\""),
        (
            "ipvs: {minSyncPeriod: -1s}",
            "ipvs.minSyncPeriod",
            "greater than or equal to 0",
        ),
        ("ipvs: {tcpTimeout: 5x}", "ipvs.tcpTimeout", "units"),
        (
            "ipvs: {scheduler: fastest}",
            "ipvs.scheduler",
            "accepted: rr, wrr",
        ),
        ("ipvs: {strictARP: yes}", "ipvs.strictARP", "true or false"),
        (
            "ipvs: {excludeCIDRs: [10.0.0.0/33]}",
            "ipvs.excludeCIDRs",
            "CIDR",
        ),
        (
            "ipvs: {excludeCIDRs: 10.0.0.0/8}",
            "ipvs.excludeCIDRs",
            "list of strings",
        ),
        (
            "ipvs: {excludeCIDRs: [1]}",
            "ipvs.excludeCIDRs[0]",
            "string",
        ),
        ("ipvs: 5", "ipvs", "expected an object"),
        (
            "iptables: {masqueradeBit: 32}",
            "iptables.masqueradeBit",
            "0 to 31",
        ),
        (
            "iptables: {masqueradeBit: x}",
            "iptables.masqueradeBit",
            "integer",
        ),
        (
            "conntrack: {maxPerCore: -1}",
            "conntrack.maxPerCore",
            "out of range",
        ),
        (
            "conntrack: {min: 99999999999}",
            "conntrack.min",
            "out of range",
        ),
        (
            "conntrack: {udpTimeout: 1}",
            "conntrack.udpTimeout",
            "Go duration",
        ),
        (
            "clusterCIDR: 10.0.0.0/8,10.1.0.0/16",
            "clusterCIDR",
            "IPv4 and an IPv6",
        ),
        ("clusterCIDR: 10.0.0.1", "clusterCIDR", "prefix"),
        (
            "nodePortAddresses: [nowhere]",
            "nodePortAddresses",
            "primary",
        ),
        (
            "nodePortAddresses: [localhost]",
            "nodePortAddresses",
            "not ipvs",
        ),
        ("healthzBindAddress: here", "healthzBindAddress", "IP:port"),
        (
            "metricsBindAddress: 1.2.3.4:99999",
            "metricsBindAddress",
            "IP:port",
        ),
        ("hostnameOverride: [a]", "hostnameOverride", "string"),
        (
            "detectLocalMode: NodeCIDR",
            "detectLocalMode",
            "not implemented",
        ),
        (
            "detectLocalMode: Pods",
            "detectLocalMode",
            "accepted: ClusterCIDR, NodeCIDR",
        ),
    ];
    for (body, path, msg) in cases {
        let e = parse(&format!("{body}\n")).unwrap_err();
        assert_eq!(e.path, *path, "{body}: {e}");
        assert!(e.message.contains(msg), "{body}: {e}");
    }
}

#[test]
fn mode_other_than_ipvs_is_rejected() {
    for mode in ["ipvs", "\"\""] {
        assert!(parse(&format!("mode: {mode}\n")).is_ok(), "{mode}");
    }
    for mode in ["iptables", "nftables", "kernelspace", "IPVS"] {
        let e = parse(&format!("mode: {mode}\n")).unwrap_err();
        assert_eq!(e.path, "mode");
        assert!(e.message.contains("only the \"ipvs\" proxy mode"), "{e}");
    }
}

#[test]
fn document_level_errors() {
    for (text, path, msg) in [
        ("", "(document)", "empty"),
        ("- a\n", "(document)", "expected an object"),
        ("a: [\n", "(document)", "invalid YAML"),
        ("{\"a\":", "(document)", "invalid JSON"),
        ("kind: KubeProxyConfiguration\n", "apiVersion", "missing"),
        (
            "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n",
            "apiVersion",
            "accepted: kubeproxy.config.k8s.io/v1alpha1",
        ),
        (
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
            "kind",
            "accepted: KubeProxyConfiguration",
        ),
        (
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n1: x\n",
            "(document)",
            "strings",
        ),
    ] {
        let e = parse_str(text).unwrap_err();
        assert_eq!(e.path, path, "{text:?}: {e}");
        assert!(e.message.contains(msg), "{text:?}: {e}");
    }
}

#[test]
fn cross_field_validation() {
    let e = parse("ipvs: {syncPeriod: 10s, minSyncPeriod: 1m}\n")
        .unwrap()
        .values
        .resolve()
        .unwrap_err();
    assert!(e.path.starts_with("ipvs.minSyncPeriod"), "{e}");
    assert!(
        e.message.contains("1m0s") && e.message.contains("10s"),
        "{e}"
    );
    let flags = ConfigValues {
        sync_period: Some(Duration::ZERO),
        ..Default::default()
    };
    assert!(ConfigValues::default().overlay(flags).resolve().is_err());
}

#[test]
fn flags_win_only_when_set() {
    let file =
        parse("ipvs: {scheduler: wlc, syncPeriod: 1m, strictARP: true}\nhostnameOverride: a\n")
            .unwrap()
            .values;
    let flags = ConfigValues {
        scheduler: Some(Scheduler::SourceHashing),
        strict_arp: Some(false),
        ..Default::default()
    };
    let s = file.overlay(flags).resolve().unwrap();
    assert_eq!(s.proxy.scheduler, Scheduler::SourceHashing);
    assert!(!s.proxy.strict_arp, "an explicit false flag wins");
    assert_eq!(s.sync_period, secs(60), "unset flag keeps the file's value");
    assert_eq!(s.hostname_override.as_deref(), Some("a"));
    let s = ConfigValues {
        hostname_override: Some(" Node-1 ".into()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(
        s.hostname_override.as_deref(),
        Some("node-1"),
        "as upstream's GetHostname"
    );
}

#[test]
fn scheduler_names() {
    assert_eq!(parse_scheduler(""), Ok(Scheduler::RoundRobin));
    for s in SCHEDULERS {
        assert_eq!(parse_scheduler(s).unwrap().name(), *s);
    }
    assert!(parse_scheduler("fo").is_err());
}

#[test]
fn node_port_keywords() {
    assert_eq!(
        parse_node_port_addresses(&["all"]),
        Ok(NodePortAddresses::All)
    );
    assert_eq!(
        parse_node_port_addresses(&["primary"]),
        Ok(NodePortAddresses::Primary)
    );
    assert_eq!(
        parse_node_port_addresses::<&str>(&[]),
        Ok(NodePortAddresses::All)
    );
    assert!(parse_node_port_addresses(&["primary", "10.0.0.0/8"]).is_err());
}

#[test]
fn bind_addresses() {
    assert_eq!(
        parse_bind_address("10.0.0.1", 10256),
        Ok("10.0.0.1:10256".parse().unwrap())
    );
    assert_eq!(
        parse_bind_address("::", 10249),
        Ok("[::]:10249".parse().unwrap())
    );
    assert_eq!(
        parse_bind_address("[::1]:9", 10249),
        Ok("[::1]:9".parse().unwrap())
    );
    assert!(parse_bind_address(":10256", 10256).is_err());
}

#[test]
fn conntrack_max_like_kube_proxy() {
    let d = ConntrackSettings::default();
    // max(32768 × ncpu, 131072)
    assert_eq!(d.max(1), Some(131072));
    assert_eq!(d.max(4), Some(131072));
    assert_eq!(d.max(8), Some(262144));
    assert_eq!(d.max(0), Some(131072), "a zero CPU count counts as one");
    let off = ConntrackSettings {
        max_per_core: 0,
        ..d.clone()
    };
    assert_eq!(off.max(64), None, "maxPerCore 0 leaves the limit alone");
    let huge = ConntrackSettings {
        max_per_core: u32::MAX,
        ..d.clone()
    };
    assert_eq!(huge.max(1024), Some(u32::MAX));
    assert_eq!(d.hashsize(8, 16384), Some(65536));
    assert_eq!(d.hashsize(8, 65536), None, "never shrinks");
    assert_eq!(off.hashsize(8, 0), None);
}

#[test]
fn conntrack_sysctls_like_kube_proxy() {
    let d = ConntrackSettings::default();
    assert_eq!(
        d.sysctls(8),
        vec![
            (conntrack::NF_CONNTRACK_MAX, "262144".to_string()),
            (conntrack::TCP_TIMEOUT_ESTABLISHED, "86400".to_string()),
            (conntrack::TCP_TIMEOUT_CLOSE_WAIT, "3600".to_string()),
        ]
    );
    let all = ConntrackSettings {
        max_per_core: 0,
        min: 5,
        tcp_established_timeout: Duration::from_millis(500),
        tcp_close_wait_timeout: secs(60),
        tcp_be_liberal: true,
        udp_timeout: secs(30),
        udp_stream_timeout: secs(120),
    };
    assert_eq!(
        all.sysctls(2),
        vec![
            (conntrack::TCP_TIMEOUT_CLOSE_WAIT, "60".to_string()),
            (conntrack::TCP_BE_LIBERAL, "1".to_string()),
            (conntrack::UDP_TIMEOUT, "30".to_string()),
            (conntrack::UDP_TIMEOUT_STREAM, "120".to_string()),
        ],
        "sub-second and zero timeouts are left alone"
    );
}

#[test]
fn conntrack_apply_on_a_fake_proc() {
    let dir = tempfile::tempdir().unwrap();
    let proc = dir.path().join("proc");
    let module = dir.path().join("module");
    std::fs::create_dir_all(proc.join("net/netfilter")).unwrap();
    std::fs::create_dir_all(&module).unwrap();
    for (k, v) in [
        ("nf_conntrack_max", "65536"),
        ("nf_conntrack_tcp_timeout_established", "432000"),
        ("nf_conntrack_tcp_timeout_close_wait", "3600"),
    ] {
        std::fs::write(proc.join("net/netfilter").join(k), format!("{v}\n")).unwrap();
    }
    std::fs::write(module.join("hashsize"), "16384\n").unwrap();
    let (p, m) = (Sysctl::with_root(&proc), Sysctl::with_root(&module));
    let out = conntrack::apply(&ConntrackSettings::default(), 8, &p, &m).unwrap();
    assert_eq!(
        out.changed,
        vec![
            (conntrack::NF_CONNTRACK_MAX, "262144".to_string()),
            (conntrack::TCP_TIMEOUT_ESTABLISHED, "86400".to_string()),
            (conntrack::HASHSIZE, "65536".to_string()),
        ]
    );
    assert!(out.warnings.is_empty());
    assert_eq!(p.get(conntrack::NF_CONNTRACK_MAX).unwrap(), "262144");
    // Second run: nothing to change.
    let again = conntrack::apply(&ConntrackSettings::default(), 8, &p, &m).unwrap();
    assert!(again.changed.is_empty(), "{:?}", again.changed);
    // No hashsize file: a warning, not an error (upstream tolerates read-only /sys).
    std::fs::remove_file(module.join("hashsize")).unwrap();
    let huge = ConntrackSettings {
        max_per_core: 65536,
        ..Default::default()
    };
    let out = conntrack::apply(&huge, 8, &p, &m).unwrap();
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
}

#[test]
fn cpu_lists() {
    assert_eq!(conntrack::count_cpu_list("0-3\n"), Some(4));
    assert_eq!(conntrack::count_cpu_list("0-3,6,8-9"), Some(7));
    assert_eq!(conntrack::count_cpu_list("0"), Some(1));
    for bad in ["", "3-1", "a", "0-"] {
        assert_eq!(conntrack::count_cpu_list(bad), None, "{bad}");
    }
    assert!(conntrack::online_cpus() >= 1);
}

#[test]
fn deploy_configmap_parses() {
    let text = include_str!("../../deploy/configmap.yaml");
    let cm = crate::yaml::from_str(text).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    let doc = cm["data"]["config.conf"].as_str().unwrap();
    let p = parse_str(doc).unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let s = p.values.resolve().unwrap();
    assert_eq!(s.sync_period, secs(30));
}

#[test]
fn arbitrary_documents_never_panic() {
    use proptest::prelude::*;
    let fields = prop::sample::select(vec![
        "ipvs",
        "syncPeriod",
        "iptables",
        "conntrack",
        "mode",
        "min",
        "scheduler",
        "x",
        "clusterCIDR",
        "nodePortAddresses",
    ]);
    let values = prop::sample::select(vec![
        "1",
        "-1",
        "\"30s\"",
        "[]",
        "{}",
        "null",
        "true",
        "\"ipvs\"",
        "[1, a]",
        "{a: b}",
        "99999999999999999999",
        "\"10.0.0.0/8\"",
        "\"1.5h\"",
    ]);
    proptest!(|(pairs in prop::collection::vec((fields, values), 0..6), nested in any::<bool>())| {
        let mut body = String::new();
        for (f, v) in &pairs {
            if nested {
                body.push_str(&format!("ipvs: {{{f}: {v}}}\n"));
            } else {
                body.push_str(&format!("{f}: {v}\n"));
            }
        }
        if let Ok(p) = parse(&body) {
            let _ = p.values.resolve();
        }
        let _ = duration::parse(&body);
    });
}

#[derive(Debug, clap::Parser)]
struct FlagsOnly {
    #[command(flatten)]
    f: flags::DaemonFlags,
}

fn flags_of(args: &[&str]) -> Result<flags::DaemonFlags, String> {
    use clap::Parser;
    FlagsOnly::try_parse_from(std::iter::once("kube-ipvs").chain(args.iter().copied()))
        .map(|c| c.f)
        .map_err(|e| e.to_string())
}

#[test]
fn flag_definitions_are_consistent() {
    use clap::CommandFactory;
    FlagsOnly::command().debug_assert();
}

#[test]
fn every_flag_parses() {
    let f = flags_of(&[
        "--ipvs-scheduler=sh",
        "--ipvs-sync-period=1m",
        "--ipvs-min-sync-period",
        "5s",
        "--ipvs-exclude-cidrs=10.0.0.0/8,192.168.0.0/16",
        "--ipvs-strict-arp",
        "--ipvs-tcp-timeout=15m",
        "--ipvs-tcpfin-timeout=2m",
        "--ipvs-udp-timeout=5m",
        "--masquerade-all=false",
        "--cluster-cidr=10.244.0.0/16,fd00::/56",
        "--nodeport-addresses=10.0.0.0/8,192.168.1.0/24",
        "--hostname-override=n1",
        "--healthz-bind-address=10.0.0.1",
        "--metrics-bind-address=0.0.0.0:9999",
        "--kubeconfig=/k",
        "--conntrack-max-per-core=0",
        "--conntrack-min=7",
        "--conntrack-tcp-timeout-established=2h",
        "--conntrack-tcp-timeout-close-wait=10s",
        "--log-format=json",
        "--proxy-mode=ipvs",
        "--iptables-masquerade-bit=3",
        "--v=4",
    ])
    .unwrap();
    let s = ConfigValues::default()
        .overlay(f.values().unwrap())
        .resolve()
        .unwrap();
    assert_eq!(s.proxy.scheduler, Scheduler::SourceHashing);
    assert_eq!((s.sync_period, s.min_sync_period), (secs(60), secs(5)));
    assert_eq!(s.proxy.exclude_cidrs.len(), 2);
    assert!(s.proxy.strict_arp && !s.proxy.masquerade_all);
    assert_eq!(
        (
            s.proxy.timeouts.tcp,
            s.proxy.timeouts.tcp_fin,
            s.proxy.timeouts.udp
        ),
        (900, 120, 300)
    );
    assert_eq!(s.proxy.cluster_cidrs.len(), 2);
    assert!(matches!(s.proxy.node_port_addresses, NodePortAddresses::Cidrs(ref v) if v.len() == 2));
    assert_eq!(s.hostname_override.as_deref(), Some("n1"));
    assert_eq!(s.healthz_bind_address, "10.0.0.1:10256".parse().unwrap());
    assert_eq!(s.metrics_bind_address, "0.0.0.0:9999".parse().unwrap());
    assert_eq!(s.kubeconfig, Some(PathBuf::from("/k")));
    assert_eq!(s.conntrack.max(8), None);
    assert_eq!(s.conntrack.min, 7);
    assert_eq!(s.conntrack.tcp_established_timeout, secs(7200));
    assert_eq!(s.conntrack.tcp_close_wait_timeout, secs(10));
    assert_eq!(s.proxy.masquerade_mark(), 8);
    assert_eq!(f.log_format, Some(flags::LogFormat::Json));
    assert_eq!(f.verbosity, Some(4));
    assert_eq!(flags_of(&["-v", "2"]).unwrap().verbosity, Some(2));
}

#[test]
fn unset_flags_are_none() {
    let f = flags_of(&[]).unwrap();
    assert_eq!(f.values().unwrap(), ConfigValues::default());
}

#[test]
fn bad_flags_name_the_flag_and_accepted_values() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--ipvs-scheduler=fast"],
            &["--ipvs-scheduler", "accepted: rr, wrr"],
        ),
        (
            &["--ipvs-sync-period=30"],
            &["--ipvs-sync-period", "Go duration"],
        ),
        (
            &["--ipvs-min-sync-period=-1s"],
            &["--ipvs-min-sync-period", "greater than or equal to 0"],
        ),
        (
            &["--ipvs-exclude-cidrs=10.0.0.0/99"],
            &["--ipvs-exclude-cidrs", "CIDR"],
        ),
        (
            &["--ipvs-strict-arp=yes"],
            &["--ipvs-strict-arp", "true", "false"],
        ),
        (&["--masquerade-all=1"], &["--masquerade-all", "true"]),
        (
            &["--cluster-cidr=10.0.0.0/8,11.0.0.0/8"],
            &["--cluster-cidr", "IPv4 and an IPv6"],
        ),
        (
            &["--healthz-bind-address=x"],
            &["--healthz-bind-address", "IP:port"],
        ),
        (
            &["--conntrack-max-per-core=-5"],
            &["--conntrack-max-per-core"],
        ),
        (&["--conntrack-min=lots"], &["--conntrack-min"]),
        (&["--log-format=xml"], &["--log-format", "text", "json"]),
        (&["--v=loud"], &["--v"]),
        (
            &["--proxy-mode=iptables"],
            &["--proxy-mode", "accepted: ipvs"],
        ),
        (
            &["--iptables-masquerade-bit=32"],
            &["--iptables-masquerade-bit", "0..=31"],
        ),
        (&["--no-such-flag"], &["--no-such-flag"]),
    ];
    for (args, needles) in cases {
        let e = flags_of(args).unwrap_err();
        for n in *needles {
            assert!(e.contains(n), "{args:?}: missing {n:?} in {e}");
        }
    }
    let e = flags_of(&["--nodeport-addresses=bogus"])
        .unwrap()
        .values()
        .unwrap_err();
    assert_eq!(e.path, "--nodeport-addresses");
    assert!(e.message.contains("primary"), "{e}");
}

#[test]
fn flags_override_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.conf");
    std::fs::write(
        &path,
        format!("{HEAD}ipvs: {{scheduler: wlc, syncPeriod: 1m, strictARP: true}}\nclusterCIDR: 10.0.0.0/8\nfeatureGates: {{X: true}}\n"),
    )
    .unwrap();
    let config = format!("--config={}", path.display());
    // File only.
    let (s, warnings) = flags_of(&[&config]).unwrap().load().unwrap();
    assert_eq!(s.proxy.scheduler, Scheduler::WeightedLeastConnection);
    assert!(s.proxy.strict_arp);
    assert_eq!(
        warnings,
        vec!["featureGates is not implemented by kube-ipvs and is ignored"]
    );
    // Explicit flags win, including an explicit false; the rest stays.
    let (s, _) = flags_of(&[&config, "--ipvs-scheduler=rr", "--ipvs-strict-arp=false"])
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(s.proxy.scheduler, Scheduler::RoundRobin);
    assert!(!s.proxy.strict_arp);
    assert_eq!(s.sync_period, secs(60));
    assert_eq!(s.proxy.cluster_cidrs, vec!["10.0.0.0/8".parse().unwrap()]);
    // A flag that breaks a cross-field rule against the file's value is named.
    let e = flags_of(&[&config, "--ipvs-min-sync-period=2m"])
        .unwrap()
        .load()
        .unwrap_err();
    assert!(format!("{e:#}").contains("--ipvs-min-sync-period"), "{e:#}");
    // Missing and invalid files name the file.
    let e = flags_of(&["--config=/nonexistent/kube-ipvs.conf"])
        .unwrap()
        .load()
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("/nonexistent/kube-ipvs.conf"),
        "{e:#}"
    );
    std::fs::write(&path, format!("{HEAD}ipvs: {{syncPeriod: soon}}\n")).unwrap();
    let e = flags_of(&[&config]).unwrap().load().unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("config.conf") && msg.contains("ipvs.syncPeriod"),
        "{msg}"
    );
}
