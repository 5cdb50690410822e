#!/usr/bin/env bash
# kube-ipvs in two minutes: boots the kernel lab, runs the daemon on the
# example manifests (examples/manifests), and shows what it programmed.
#
#   scripts/demo.sh
#
# What you see:
#   1. `ipvsadm -Ln` next to `kube-ipvs ipvs list` (the same table, read over netlink);
#   2. requests to the ClusterIP 10.96.0.10 going through IPVS to three pods,
#      each answering with its name;
#   3. the web service scaled from 3 to 4 endpoints by editing its manifest:
#      the daemon applies only the difference, and the kernel operations it
#      took are counted from its metrics.
#
# On a machine without IPVS (a CI box, a laptop container) the demo runs in
# the lab VM (scripts/kernel-lab.sh), which it installs on first use; on a real
# node it runs directly, as root, inside its own network namespaces.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "${1:-}" != "--in-lab" ]; then
  cd "$root"
  echo "==> building kube-ipvs (release)"
  cargo build --release --locked --bin kube-ipvs
  echo "==> starting the lab (first use installs qemu, virtme-ng and a Debian kernel)"
  exec scripts/kernel-lab.sh --timeout 900 -- "$root/scripts/demo.sh" --in-lab
fi

# ---- inside the lab (or on a real node): root, a kernel with IPVS ----------
bin="$root/target/release/kube-ipvs"
[ -x "$bin" ] || { echo "demo: $bin is missing: run scripts/demo.sh (it builds it)" >&2; exit 1; }
py=$(command -v python3) || { echo "demo: python3 is needed for the demo pods' web servers" >&2; exit 1; }
command -v curl >/dev/null || { echo "demo: curl is needed to send the requests (apt-get install curl)" >&2; exit 1; }
node=kid-node
work=$(mktemp -d)
pods=()
servers=()
daemon=

cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  for s in "${servers[@]}"; do kill "$s" 2>/dev/null || true; done
  for p in "${pods[@]}"; do ip netns delete "$p" 2>/dev/null || true; done
  ip netns delete "$node" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

in_node() { ip netns exec "$node" "$@"; }
title() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# The node: its own namespace, the example Node's address on a dummy uplink,
# and a bridge for the pods (10.244.0.0/16, gateway 10.244.0.1).
ip netns add "$node"
in_node ip link set lo up
in_node ip link add eth0 type dummy
in_node ip addr add 192.168.100.10/24 dev eth0
in_node ip link set eth0 up
in_node ip link add cbr0 type bridge
in_node ip addr add 10.244.0.1/16 dev cbr0
in_node ip link set cbr0 up
in_node sysctl -qw net.ipv4.ip_forward=1

# A pod: a namespace on a veth into the bridge, serving "<name> <ip>" over HTTP on 8080.
pod() {
  local name=$1 ip=$2 ns="kid-$1"
  ip netns add "$ns"
  pods+=("$ns")
  ip link add "v-$name" type veth peer name eth0 netns "$ns"
  ip link set "v-$name" netns "$node"
  in_node ip link set "v-$name" master cbr0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$ip/16" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via 10.244.0.1
  ip netns exec "$ns" "$py" -c '
import http.server, sys
body = (sys.argv[1] + "\n").encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()
' "$name $ip" &
  servers+=($!)
}
pod web-1 10.244.1.1
pod web-2 10.244.1.2
pod web-3 10.244.1.3
pod web-4 10.244.1.4

# Wait until a shell predicate holds, for at most $1 seconds.
wait_until() {
  local limit=$1; shift
  for _ in $(seq $((limit * 4))); do "$@" && return 0; sleep 0.25; done
  echo "demo: timed out waiting for: $*" >&2
  [ -f "$work/log" ] && tail -20 "$work/log" >&2
  return 1
}
answers() { in_node curl -s --max-time 2 http://10.244.1.4:8080/ >/dev/null 2>&1; }
wait_until 60 answers

cp -r "$root/examples/manifests" "$work/manifests"
title "kube-ipvs --manifests examples/manifests (node lab-node, in network namespace $node)"
in_node env RUST_LOG=info NO_COLOR=1 "$bin" --manifests "$work/manifests" \
  --hostname-override lab-node \
  --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256 \
  --conntrack-max-per-core=0 2>"$work/log" &
daemon=$!
# The first sync's log line comes once IPVS, ipsets, addresses and iptables are all in.
first_sync() { grep -q ' synced' "$work/log"; }
wait_until 120 first_sync
grep -E 'adopted|synced' "$work/log" | sed 's/^/  log: /'

title "ipvsadm -Ln                                          | kube-ipvs ipvs list"
in_node ipvsadm -Ln >"$work/ipvsadm"
in_node "$bin" ipvs list >"$work/ours"
pr -m -t -w 120 "$work/ipvsadm" "$work/ours"
if cmp -s "$work/ipvsadm" "$work/ours"; then
  echo "(identical: kube-ipvs reads the same table over netlink, without ipvsadm)"
else
  echo "(they differ:)"; diff "$work/ipvsadm" "$work/ours" || true
fi

title "addresses on kube-ipvs0, and the ipsets the iptables rules match"
in_node ip -br addr show kube-ipvs0 | sed 's/^/  /'
echo "  $(in_node ipset list -n | wc -l) ipsets, kube-proxy's names; the non-empty ones:"
for set in $(in_node ipset list -n); do
  n=$(in_node ipset list "$set" | sed '1,/^Members:/d' | grep -c . || true)
  if [ "$n" -gt 0 ]; then
    printf '    %-28s %s: %s\n' "$set" "$n" "$(in_node ipset list "$set" | sed '1,/^Members:/d' | tr '\n' ' ')"
  fi
done

requests() {
  local n=$1
  for _ in $(seq "$n"); do in_node curl -s --max-time 5 http://10.96.0.10/ || echo "(no answer)"; done | sort | uniq -c | sed 's/^/  /'
}
title "9 requests to the ClusterIP http://10.96.0.10/ (rr scheduler): who answered"
requests 9

metric() { in_node curl -s http://127.0.0.1:10249/metrics | awk -v m="$1" '$1 == m { print $2 }'; }
title "scaling web from 3 to 4 endpoints: adding 10.244.1.4 to its EndpointSlice"
ops_before=$(metric kube_ipvs_netlink_operations_total)
syncs_before=$(grep -c ' synced' "$work/log" || true)
# Written aside and renamed, as a ConfigMap update does.
sed 's/^- addresses: \[10.244.1.3\]$/- addresses: [10.244.1.3]\n  conditions: {ready: true}\n- addresses: [10.244.1.4]/' \
  "$work/manifests/web.yaml" >"$work/web.yaml.new"
mv "$work/web.yaml.new" "$work/manifests/web.yaml"
scaled() { in_node ipvsadm -Ln -t 10.96.0.10:80 2>/dev/null | grep -q 10.244.1.4; }
wait_until 60 scaled
synced_once_more() { [ "$(grep -c ' synced' "$work/log" || true)" -gt "$syncs_before" ]; }
wait_until 30 synced_once_more
ops_after=$(metric kube_ipvs_netlink_operations_total)
grep ' synced' "$work/log" | tail -1 | sed 's/^/  log: /'
echo "  kernel operations for this change: $((ops_after - ops_before)) netlink message(s)" \
  "(kube_ipvs_netlink_operations_total $ops_before -> $ops_after)"
in_node ipvsadm -Ln -t 10.96.0.10:80 | sed 's/^/  /'

title "12 requests after the change: who answered"
requests 12

title "SIGTERM: kube-ipvs exits and leaves the kernel state in place"
kill -TERM "$daemon"; wait "$daemon" || true; daemon=
echo "  virtual servers still programmed: $(in_node ipvsadm -Ln | grep -c -E '^(TCP|UDP|SCTP|FWM)')"
requests 3
