#!/usr/bin/env python3
"""Writes the small seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Netlink seeds: the kernel replies captured in the lab that the library's tests
hold (ipvs/captured.rs, ipset/tests.rs), wrapped in netlink headers, plus
hand-built replies of the other families in the kernel's layout. Text seeds:
the project's own examples and small hand-written inputs. Rerun after
changing it; the fuzzers add what they find to the same folders when run
without -runs (scripts/fuzz.sh keeps its findings in fuzz/corpus-new/ instead).
"""
import glob
import os
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def pad(b):
    return b + b"\0" * (-len(b) % 4)


def nlmsg(msg_type, payload, flags=0, seq=1):
    return pad(struct.pack("=IHHII", 16 + len(payload), msg_type, flags, seq, 0) + payload)


def nla(kind, value):
    return pad(struct.pack("=HH", 4 + len(value), kind) + value)


def nest(kind, *attrs):
    return nla(kind | 0x8000, b"".join(attrs))


def rust_consts(path):
    """`const NAME: [u8; N] = [0x.., ...];` arrays of a Rust source file."""
    text = open(os.path.join(ROOT, path)).read()
    for m in re.finditer(r"const (\w+): \[u8; \d+\] = \[(.*?)\];", text, re.S):
        yield m.group(1), bytes(int(x, 16) for x in re.findall(r"0x[0-9a-fA-F]+", m.group(2)))


# IPVS: captured GET_SERVICE / GET_DEST / GET_INFO / GET_CONFIG payloads.
IPVS_FAMILY = 0x1E
ipvs = dict(rust_consts("ipvs-netlink/src/ipvs/captured.rs"))
for name, payload in ipvs.items():
    write("ipvs_reply", name.lower(), nlmsg(IPVS_FAMILY, payload, flags=2))
write("ipvs_reply", "dump", b"".join(nlmsg(IPVS_FAMILY, p, flags=2) for p in ipvs.values()))

# ipset: captured LIST replies (hex strings in ipset/tests.rs).
text = open(os.path.join(ROOT, "ipvs-netlink/src/ipset/tests.rs")).read()
caps = re.findall(r'"([0-9a-f]{40,})"', text)
IPSET_LIST = (6 << 8) | 7  # NFNL_SUBSYS_IPSET, IPSET_CMD_LIST
for i, h in enumerate(caps):
    write("ipset_reply", f"list{i}", nlmsg(IPSET_LIST, bytes.fromhex(h), flags=2))
write("ipset_reply", "dump", b"".join(nlmsg(IPSET_LIST, bytes.fromhex(h), flags=2) for h in caps))

# rtnetlink: a dummy link and its addresses.
IFF_UP, IFF_NOARP = 1, 0x80
link = struct.pack("=BxHiII", 0, 1, 7, IFF_UP | IFF_NOARP, 0) + nla(3, b"kube-ipvs0\0") + nla(
    4, struct.pack("=I", 1500)
) + nest(18, nla(1, b"dummy\0"))
addr4 = struct.pack("=BBBBI", 2, 32, 0x80, 0, 7) + nla(1, bytes([10, 96, 0, 1])) + nla(2, bytes([10, 96, 0, 1]))
addr6 = struct.pack("=BBBBI", 10, 128, 0x80, 0, 7) + nla(1, bytes.fromhex("fd000000000000000000000000000001"))
write("rtnl_reply", "link", nlmsg(16, link, flags=2))
write("rtnl_reply", "addr4", nlmsg(20, addr4, flags=2))
write("rtnl_reply", "addr6", nlmsg(20, addr6, flags=2))
write("rtnl_reply", "dump", nlmsg(16, link, 2) + nlmsg(20, addr4, 2) + nlmsg(20, addr6, 2) + nlmsg(3, b"\0" * 4, 2))


# conntrack: CT_NEW entries as the kernel dumps them (nfgenmsg, tuples, id).
def tuple_(kind, proto, src, dst, sport, dport, v6=False):
    ips = nla(3 if v6 else 1, src) + nla(4 if v6 else 2, dst)
    ports = nla(1, bytes([proto])) + nla(2, struct.pack(">H", sport)) + nla(3, struct.pack(">H", dport))
    return nest(kind, nest(1, ips), nest(2, ports))


CT_NEW = (1 << 8) | 0
v4 = lambda *o: bytes(o)
flow4 = struct.pack("=BBH", 2, 0, 0) + tuple_(1, 17, v4(10, 0, 0, 1), v4(10, 96, 0, 10), 40000, 53) + tuple_(
    2, 17, v4(10, 244, 1, 5), v4(10, 0, 0, 1), 53, 40000
) + nla(12, struct.pack(">I", 77)) + nla(18, struct.pack(">H", 0))
a6, b6 = bytes.fromhex("fd000000000000000000000000000001"), bytes.fromhex("fd000000000000000000000000000002")
flow6 = struct.pack("=BBH", 10, 0, 0) + tuple_(1, 6, a6, b6, 1234, 80, True) + tuple_(2, 6, b6, a6, 80, 1234, True)
write("conntrack_reply", "flow4", nlmsg(CT_NEW, flow4, flags=2))
write("conntrack_reply", "flow6", nlmsg(CT_NEW, flow6, flags=2))
write("conntrack_reply", "dump", nlmsg(CT_NEW, flow4, 2) + nlmsg(CT_NEW, flow6, 2) + nlmsg(3, b"\0" * 4, 2))

# nlctrl: NEWFAMILY for IPVS (name, id, version, a multicast group list).
fam = bytes([1, 2, 0, 0]) + nla(2, b"IPVS\0") + nla(1, struct.pack("=H", IPVS_FAMILY)) + nla(3, struct.pack("=I", 1))
fam += nest(7, nest(1, nla(2, b"ipvs\0"), nla(1, struct.pack("=I", 9))))
write("genl_ctrl_reply", "newfamily", nlmsg(0x10, fam))
write("genl_ctrl_reply", "two", nlmsg(0x10, fam) + nlmsg(0x10, bytes([1, 2, 0, 0]) + nla(2, b"nlctrl\0") + nla(1, struct.pack("=H", 0x10))))

# NLMSG_ERROR and NLMSG_DONE, with and without extended ACK.
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200
req = struct.pack("=IHHII", 40, IPVS_FAMILY, 5, 7, 0)
ext = nla(1, b"Attribute failed policy validation\0") + nla(2, struct.pack("=I", 28)) + nla(5, struct.pack("=I", 3))
write("nlmsg_error", "ack", nlmsg(2, struct.pack("=i", 0) + req))
write("nlmsg_error", "capped_extack", nlmsg(2, struct.pack("=i", -22) + req + ext, NLM_F_CAPPED | NLM_F_ACK_TLVS))
full = req[:0] + struct.pack("=IHHII", 24, IPVS_FAMILY, 5, 7, 0) + b"\1\1\0\0" + b"\0" * 4
write("nlmsg_error", "full_extack", nlmsg(2, struct.pack("=i", -17) + full + ext, NLM_F_ACK_TLVS))
write("nlmsg_error", "done_error", nlmsg(3, struct.pack("=i", -95) + ext, 2))
write("nlmsg_error", "mixed", nlmsg(3, struct.pack("=i", 0), 2) + nlmsg(2, struct.pack("=i", -2) + req, NLM_F_CAPPED))

# ipvs restore: ipvsadm -S output and edits.
write("ipvs_restore", "save", """-A -t 10.96.0.1:443 -s rr
-a -t 10.96.0.1:443 -r 192.168.0.10:6443 -m -w 1
-A -u 10.96.0.10:53 -s rr -p 10800
-a -u 10.96.0.10:53 -r 10.244.0.3:53 -m -w 1
-A -t [fd00:10:96::1]:80 -s sh -b flag-1,flag-2 -M ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00
-a -t [fd00:10:96::1]:80 -r [fd00:10:244::5]:8080 -m -w 3 -x 100 -y 10
-A -f 7 -s wlc
-a -f 7 -r 10.244.1.5:0 -g -w 2
""")
write("ipvs_restore", "edits", """# comment
-C
-E -t 10.96.0.1:443 -s wrr -p
-e -t 10.96.0.1:443 -r 192.168.0.10:6443 -i -w 0
-d -t 10.96.0.1:443 -r 192.168.0.10:6443
-D -t 10.96.0.1:443
ipvsadm -A --tcp-service 10.0.0.1:80 --scheduler mh --persistent 60 --netmask 255.255.255.0
--add-server --tcp-service 10.0.0.1:80 --real-server 10.1.0.1:80 --masquerading --weight 5
-A --sctp-service 10.0.0.2:9 -s rr
""")

# KubeProxyConfiguration: the deployed ConfigMap's file, and JSON.
for p in glob.glob(os.path.join(ROOT, "deploy", "*.yaml")) + glob.glob(os.path.join(ROOT, "deploy", "*.conf")):
    t = open(p).read()
    if "KubeProxyConfiguration" in t and "kind: ConfigMap" not in t and len(t) < 4096:
        write("config_file", os.path.basename(p), t)
write("config_file", "full.yaml", """apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
hostnameOverride: Node-A
nodePortAddresses: [primary]
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 5
iptables:
  masqueradeAll: false
  masqueradeBit: 14
ipvs:
  scheduler: wrr
  syncPeriod: 30s
  minSyncPeriod: 1s
  excludeCIDRs: [10.0.0.0/8]
  strictARP: true
  tcpTimeout: 900s
  tcpFinTimeout: 120s
  udpTimeout: 300s
conntrack:
  maxPerCore: 32768
  min: 131072
  tcpEstablishedTimeout: 24h0m0s
  tcpCloseWaitTimeout: 1h0m0s
  udpTimeout: 30s
featureGates:
  SomeGate: true
""")
write("config_file", "min.json", '{"apiVersion":"kubeproxy.config.k8s.io/v1alpha1","kind":"KubeProxyConfiguration",'
      '"ipvs":{"syncPeriod":"1m30s","minSyncPeriod":"500ms"},"nodePortAddresses":["10.0.0.0/8","fd00::/64"]}')

# Durations, with the limits: i64::MAX ns (Go's largest) and a value whose
# integer part alone still fits a u128 of nanoseconds.
for i, d in enumerate(["30s", "1h30m", "500ms", "-2.5us", "1.5h", "0", "300ns", "2562047h47m16.854775807s", ".5s", "1µs",
                       "9223372036854775807ns", "340282366920938463463374607431768211us",
                       "340282366920938463463374607431768211.4us"]):
    write("duration", f"d{i}", d)

# Flags: NUL-separated arguments after `kube-ipvs`.
for i, argv in enumerate([
    ["--ipvs-scheduler=wlc", "--ipvs-sync-period", "30s", "--ipvs-min-sync-period=1s", "--cluster-cidr=10.244.0.0/16,fd00::/56"],
    ["--ipvs-strict-arp", "--masquerade-all=false", "--iptables-masquerade-bit=14", "--nodeport-addresses=primary,10.0.0.0/8"],
    ["--healthz-bind-address=0.0.0.0:10256", "--metrics-bind-address=[::1]", "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=24h", "--v=4"],
    ["--ipvs-exclude-cidrs=10.0.0.0/8", "--ipvs-tcp-timeout=900s", "--ipvs-tcpfin-timeout=2m", "--ipvs-udp-timeout=5m", "--proxy-mode=ipvs", "--hostname-override=Node-A"],
    ["plan", "--manifests", "x.yaml", "--node", "node-a"],
    ["ipvs", "list", "-n"],
]):
    write("flags", f"argv{i}", "\0".join(argv))

# Manifests: the examples (small ones), and a hand-made dual-stack service.
for p in sorted(glob.glob(os.path.join(ROOT, "examples", "manifests", "*"))):
    if os.path.isfile(p) and os.path.getsize(p) < 4096:
        write("manifests", os.path.basename(p), open(p, "rb").read())
write("manifests", "dual.yaml", """apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {topology.kubernetes.io/zone: z1}}
status: {addresses: [{type: InternalIP, address: 192.168.0.10}, {type: InternalIP, address: "fd00::10"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  ipFamilies: [IPv4, IPv6]
  clusterIPs: [10.96.0.20, "fd00:96::20"]
  externalIPs: [192.0.2.7]
  externalTrafficPolicy: Local
  internalTrafficPolicy: Cluster
  healthCheckNodePort: 31000
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  loadBalancerSourceRanges: [203.0.113.0/24]
  ports:
  - {name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}
  - {name: dns, port: 53, protocol: UDP}
status: {loadBalancer: {ingress: [{ip: 198.51.100.4}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- addresses: [10.244.0.5]
  nodeName: node-a
  zone: z1
  conditions: {ready: true, serving: true, terminating: false}
  hints: {forZones: [{name: z1}]}
- addresses: [10.244.1.6]
  nodeName: node-b
  conditions: {ready: false, serving: true, terminating: true}
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: dns, port: 53, protocol: UDP}
""")

# /proc/net/ip_vs as Debian's 6.1 printed it (the parser's own captured test text).
with open(os.path.join(ROOT, "ipvs-netlink", "src", "ipvs", "proc_ip_vs.txt")) as f:
    write("proc_ip_vs", "captured-6.1", f.read())
