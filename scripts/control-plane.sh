#!/usr/bin/env bash
# A real Kubernetes control plane on demand, for kube-ipvs's API-mode tests.
#
#   eval "$(scripts/control-plane.sh up)"   start it (or find it running); prints only
#                                           export lines: KUBECTL, KUBECONFIG_ADMIN,
#                                           KUBECONFIG_KUBE_IPVS, and the _GUEST twins
#                                           of the last two for the lab (10.0.2.2)
#   scripts/control-plane.sh down           stop what `up` started (idempotent)
#   scripts/control-plane.sh status         exit 0 if it is up and ready
#   scripts/control-plane.sh selftest       up, prove the EndpointSlice controller and
#                                           kube-ipvs's RBAC work, then down
#   scripts/control-plane.sh outage SECONDS compact etcd's history, stop the apiserver
#                                           and etcd for SECONDS, start them again on
#                                           the same data
#   scripts/control-plane.sh agent          serve `outage` to the lab guest over HTTP on
#                                           127.0.0.1:$KUBE_IPVS_CP_AGENT_PORT (16480);
#                                           see control-plane-agent.py
#
# etcd, kube-apiserver and kube-controller-manager from scripts/k8s-fixtures.sh,
# all over TLS with a CA made here by openssl, Node,RBAC authorization,
# service-account signing keys and dual-stack service ranges. The controllers
# are those kube-ipvs reads the output of (endpointslice, endpointslicemirroring),
# the garbagecollector (or slices of deleted Services linger) and the two
# service-account ones (the `default` ServiceAccount pods need, and tokens).
# There is no kubelet and no scheduler: tests create pods with spec.nodeName set
# to the Node made here and patch their status Running and Ready.
#
# The apiserver listens on 127.0.0.1 only. The kernel lab's guest reaches it as
# https://10.0.2.2:PORT over qemu user networking (kernel-lab.sh --net), which
# is why KUBECONFIG_KUBE_IPVS_GUEST exists and the serving cert names 10.0.2.2.
# kube-ipvs's kubeconfigs hold a TokenRequest token for its ServiceAccount from
# deploy/rbac.yaml, never admin credentials.
#
# Environment: KUBE_IPVS_CP_STATE (state dir: certs, kubeconfigs, logs, pid
# files; default $KUBE_IPVS_K8S_CACHE/control-plane), KUBE_IPVS_CP_PORT (apiserver,
# 16443), KUBE_IPVS_CP_ETCD_PORT (12379; the peer port is the next one),
# KUBE_IPVS_CP_NODE (the Node made, lab-node), KUBE_IPVS_CP_ADVERTISE (the
# address in the `kubernetes` Service's endpoints; default this host's),
# KUBE_IPVS_CP_AGENT_PORT (the agent, 16480).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cache=${KUBE_IPVS_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-ipvs-k8s}
state=${KUBE_IPVS_CP_STATE:-$cache/control-plane}
port=${KUBE_IPVS_CP_PORT:-16443}
etcd_port=${KUBE_IPVS_CP_ETCD_PORT:-12379}
node=${KUBE_IPVS_CP_NODE:-lab-node}
# What the guest of scripts/kernel-lab.sh --net sees the host as (qemu user
# networking forwards it to the host's loopback).
GUEST_HOST_IP=10.0.2.2
SERVICE_CIDRS=10.96.0.0/12,fd00:96::/108
CONTROLLERS=endpointslice,endpointslicemirroring,garbagecollector,serviceaccount,serviceaccount-token

die() { echo "control-plane: $*" >&2; exit 1; }
say() { echo "control-plane: $*" >&2; }

for v in port etcd_port; do
  case "${!v}" in ''|*[!0-9]*) die "KUBE_IPVS_CP_${v^^} must be a port number, not '${!v}'" ;; esac
done
pki=$state/pki
logs=$state/logs
admin_kc=$state/admin.kubeconfig
kcm_kc=$state/controller-manager.kubeconfig
ipvs_kc=$state/kube-ipvs.kubeconfig
ipvs_guest_kc=$state/kube-ipvs-guest.kubeconfig
admin_guest_kc=$state/admin-guest.kubeconfig
agent_port=${KUBE_IPVS_CP_AGENT_PORT:-16480}

bin_dir() { "$here/k8s-fixtures.sh" --print-dir; }

# ---- processes -------------------------------------------------------------

# alive NAME: the pid in NAME's pid file runs our binary NAME.
alive() {
  local pid
  pid=$(cat "$state/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "/$1 "
}

# start NAME ARGS...: runs the fixture binary NAME detached from our stdout (so
# `$(control-plane.sh up)` returns) and from our session (so a Ctrl-C in the
# caller's terminal does not take it down), logging to logs/NAME.log.
start() {
  local name=$1; shift
  setsid "$bin/$name" "$@" </dev/null >>"$logs/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
}

# stop NAME [SIGNAL]: SIGTERM (or SIGNAL), then SIGKILL after 10 s.
stop() {
  local name=$1 sig=${2:-TERM} pid i
  if alive "$name"; then
    pid=$(cat "$state/$name.pid")
    kill -"$sig" "$pid" 2>/dev/null || true
    for i in $(seq 100); do alive "$name" || break; sleep 0.1; done
    if alive "$name"; then say "$name ($pid) ignored SIGTERM for 10 s; killing it"; kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$state/$name.pid"
}

down() {
  local n
  for n in kube-controller-manager kube-apiserver etcd; do stop "$n"; done
}

# ---- PKI ---------------------------------------------------------------------

# The address the `kubernetes` Service points at: the host's own, as a node's
# would be (the apiserver refuses loopback there).
advertise_ip() {
  [ -n "${KUBE_IPVS_CP_ADVERTISE:-}" ] && { echo "$KUBE_IPVS_CP_ADVERTISE"; return; }
  local ip
  ip=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1) || true
  # No route (the lab guest has none): a documentation address, only ever
  # written into the kubernetes Service's EndpointSlice.
  echo "${ip:-192.0.2.1}"
}

# cert NAME CN ORG EXT: a P-256 key and a CA-signed cert with extensions EXT.
cert() {
  local name=$1 cn=$2 org=$3 ext=$4 subj="/CN=$2"
  [ -n "$org" ] && subj="/O=$org$subj"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -out "$pki/$name.crt" -extfile <(printf '%s\n' "$ext") 2>/dev/null
  rm -f "$pki/$name.csr"
}

make_pki() {
  local adv=$1
  # Every IP and name a client may dial: loopback (the host), 10.0.2.2 (the lab
  # guest), the first service IP of each family (kube-ipvs's own VIP for the
  # `kubernetes` Service) and the advertised address.
  local sans="IP:127.0.0.1,IP:::1,IP:$GUEST_HOST_IP,IP:10.96.0.1,IP:fd00:96::1,IP:$adv,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  if [ -f "$pki/.complete" ] && [ "$(cat "$pki/.complete")" = "$sans" ]; then return; fi
  say "making a CA and certificates in $pki"
  rm -rf "$pki"; mkdir -p "$pki"; chmod 700 "$pki"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" -subj "/CN=kube-ipvs-test-ca" 2>/dev/null \
    || die "openssl could not make a CA (is openssl installed?)"
  local server="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth"
  local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  cert apiserver kube-apiserver "" "$server
subjectAltName=$sans"
  cert etcd etcd "" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
  cert apiserver-etcd-client kube-apiserver-etcd-client "" "$client"
  # system:masters is the superuser group; the controller manager's name is
  # the one upstream's bootstrap RBAC binds system:kube-controller-manager to.
  cert admin kubernetes-admin system:masters "$client"
  cert controller-manager system:kube-controller-manager "" "$client"
  # The service-account token signing key pair.
  openssl ecparam -name prime256v1 -genkey -noout -out "$pki/sa.key" 2>/dev/null
  openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  printf '%s' "$sans" >"$pki/.complete"
}

# kubeconfig FILE SERVER USER_YAML: a kubeconfig trusting our CA.
kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kube-ipvs-test
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: user
  user:
$3
contexts:
- name: kube-ipvs-test
  context: {cluster: kube-ipvs-test, user: user}
current-context: kube-ipvs-test
EOF
  chmod 600 "$1"
}

cert_user() {
  printf '    client-certificate-data: %s\n    client-key-data: %s\n' \
    "$(base64 -w0 "$pki/$1.crt")" "$(base64 -w0 "$pki/$1.key")"
}

# ---- up ----------------------------------------------------------------------

ready() { "$bin/kubectl" --kubeconfig "$admin_kc" --request-timeout=2s get --raw /readyz >/dev/null 2>&1; }

# wait_for WHAT SECONDS CMD...: polls CMD every 0.2 s; dies with the logs of a
# component that exited meanwhile.
wait_for() {
  local what=$1 secs=$2 n; shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    for n in etcd kube-apiserver kube-controller-manager; do
      if [ -f "$state/$n.pid" ] && ! alive "$n"; then
        tail -20 "$logs/$n.log" >&2
        down
        die "$n exited while waiting for $what (log: $logs/$n.log)"
      fi
    done
    sleep 0.2
  done
  die "no $what after ${secs} s (logs in $logs)"
}

# start_etcd: etcd on $etcd_port over client-cert TLS, data in $state/etcd-data.
start_etcd() {
  start etcd --name=kube-ipvs-test --data-dir="$state/etcd-data" \
    --listen-client-urls="https://127.0.0.1:$etcd_port" --advertise-client-urls="https://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls="http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster="kube-ipvs-test=http://127.0.0.1:$((etcd_port + 1))" \
    --cert-file="$pki/etcd.crt" --key-file="$pki/etcd.key" \
    --client-cert-auth --trusted-ca-file="$pki/ca.crt" --log-level=warn
}

# start_apiserver ADVERTISE_IP
start_apiserver() {
  local adv=$1
  start kube-apiserver \
    --etcd-servers="https://127.0.0.1:$etcd_port" --etcd-cafile="$pki/ca.crt" \
    --etcd-certfile="$pki/apiserver-etcd-client.crt" --etcd-keyfile="$pki/apiserver-etcd-client.key" \
    --bind-address=127.0.0.1 --secure-port="$port" --advertise-address="$adv" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-cluster-ip-range="$SERVICE_CIDRS" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --profiling=false
}

up() {
  command -v openssl >/dev/null 2>&1 || die "openssl is missing (apt-get install openssl): it makes the test CA"
  bin=$(bin_dir) || die "the control-plane binaries are not built: run scripts/k8s-fixtures.sh"
  mkdir -p "$state" "$logs"
  if alive etcd && alive kube-apiserver && alive kube-controller-manager && ready; then
    say "already up (state in $state)"
  else
    down
    local adv t0=$SECONDS
    adv=$(advertise_ip)
    make_pki "$adv"
    kubeconfig "$admin_kc" "https://127.0.0.1:$port" "$(cert_user admin)"
    echo "$adv" >"$state/advertise"
    kubeconfig "$kcm_kc" "https://127.0.0.1:$port" "$(cert_user controller-manager)"
    say "starting etcd, kube-apiserver (https://127.0.0.1:$port) and kube-controller-manager; logs in $logs"
    rm -rf "$state/etcd-data" "$logs"/*.log
    start_etcd
    start_apiserver "$adv"
    wait_for "apiserver /readyz" 90 ready
    say "apiserver ready after $((SECONDS - t0)) s"
    start kube-controller-manager --kubeconfig="$kcm_kc" \
      --controllers="$CONTROLLERS" --leader-elect=false --secure-port=0 \
      --use-service-account-credentials \
      --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
      --profiling=false
    "$bin/kubectl" --kubeconfig "$admin_kc" apply -f "$root/deploy/rbac.yaml" >"$logs/apply.log" 2>&1 \
      || { cat "$logs/apply.log" >&2; die "applying deploy/rbac.yaml failed"; }
    ensure_node
    # The serviceaccount controller makes `default` in each namespace; pods
    # cannot be created before it exists, so callers may rely on it.
    wait_for "default ServiceAccount (the controller manager working)" 60 \
      "$bin/kubectl" --kubeconfig "$admin_kc" get serviceaccount default -n default -o name
    say "up in $((SECONDS - t0)) s"
  fi
  # A fresh token on every `up`: TokenRequest tokens expire.
  local token
  token=$("$bin/kubectl" --kubeconfig "$admin_kc" create token kube-ipvs -n kube-system --duration=24h) \
    || die "kubectl create token failed for kube-system/kube-ipvs"
  kubeconfig "$ipvs_kc" "https://127.0.0.1:$port" "    token: $token"
  kubeconfig "$ipvs_guest_kc" "https://$GUEST_HOST_IP:$port" "    token: $token"
  # For the lab's tests, which create what a user would (never given to kube-ipvs).
  kubeconfig "$admin_guest_kc" "https://$GUEST_HOST_IP:$port" "$(cert_user admin)"
  printf 'export KUBECTL=%q\n' "$bin/kubectl"
  printf 'export KUBECONFIG_ADMIN=%q\n' "$admin_kc"
  printf 'export KUBECONFIG_KUBE_IPVS=%q\n' "$ipvs_kc"
  printf 'export KUBECONFIG_KUBE_IPVS_GUEST=%q\n' "$ipvs_guest_kc"
  printf 'export KUBECONFIG_ADMIN_GUEST=%q\n' "$admin_guest_kc"
}

# outage SECONDS: what a control-plane failure looks like to a node. etcd's
# history is compacted first, so every watch resumed afterwards from an old
# resourceVersion gets 410 Gone and must re-list; then kube-apiserver and etcd
# stop (connections refused) for SECONDS and start again on the same data.
# The controller manager stays up and reconnects, as on a real control plane.
outage() {
  local secs=${1:?outage needs SECONDS} rev t0
  case "$secs" in ''|*[!0-9]*) die "outage: SECONDS must be a number, not '$secs'" ;; esac
  bin=$(bin_dir) || die "the control-plane binaries are not built: run scripts/k8s-fixtures.sh"
  alive etcd && alive kube-apiserver && ready || die "outage: the control plane is not up"
  rev=$(python3 "$here/control-plane-agent.py" compact "$state" "$etcd_port") || die "outage: compacting etcd failed"
  say "outage: etcd compacted at revision $rev; kube-apiserver and etcd stop for $secs s"
  # Killed, not terminated: the apiserver drains for over 10 s on SIGTERM,
  # and a crashed control plane is the harder case for clients anyway.
  stop kube-apiserver KILL
  stop etcd KILL
  sleep "$secs"
  t0=$SECONDS
  start_etcd
  start_apiserver "$(cat "$state/advertise")"
  wait_for "apiserver /readyz after the outage" 90 ready
  say "outage: over; apiserver ready $((SECONDS - t0)) s after the restart"
}

# The Node the lab's kube-ipvs runs as (tests/fakeapi's lab_node): the
# EndpointSlice controller skips a whole Service whose pods name a Node that
# does not exist.
ensure_node() {
  local k=("$bin/kubectl" --kubeconfig "$admin_kc")
  "${k[@]}" get node "$node" -o name >/dev/null 2>&1 && return
  printf '{"apiVersion":"v1","kind":"Node","metadata":{"name":"%s","labels":{"kubernetes.io/hostname":"%s"}}}' "$node" "$node" \
    | "${k[@]}" create -f - >>"$logs/apply.log" 2>&1 || die "creating Node $node failed (see $logs/apply.log)"
  "${k[@]}" patch node "$node" --subresource=status --type=merge \
    -p '{"status":{"addresses":[{"type":"InternalIP","address":"192.168.100.10"},{"type":"Hostname","address":"'"$node"'"}]}}' \
    >>"$logs/apply.log" 2>&1 || die "setting Node $node's addresses failed (see $logs/apply.log)"
}

# ---- selftest ----------------------------------------------------------------

# up; a Service and a pod on the Node, made Running and Ready by a status patch
# as a kubelet would; the real EndpointSlice controller must write the pod's IP
# into the Service's slice; kube-ipvs's token must read what it watches and be
# refused Secrets and Service writes; down (unless it was up already).
selftest() {
  local was_up=0 t0=$SECONDS
  "$0" status && was_up=1
  eval "$(up)"
  [ "$was_up" = 1 ] || trap '"$0" down' EXIT
  local ns=selftest-$$ ip=10.244.0.7 fail=0 t1
  k=("$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" -n "$ns")
  local kipvs=("$KUBECTL" --kubeconfig "$KUBECONFIG_KUBE_IPVS")
  "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" create namespace "$ns" >/dev/null
  wait_for "default ServiceAccount in $ns" 30 "${k[@]}" get serviceaccount default -o name
  "${k[@]}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, labels: {app: web}}
spec:
  nodeName: $node
  containers: [{name: web, image: registry.invalid/none}]
EOF
  "${k[@]}" patch pod web-0 --subresource=status --type=merge \
    -p "{\"status\":{\"phase\":\"Running\",\"podIP\":\"$ip\",\"podIPs\":[{\"ip\":\"$ip\"}],\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}" >/dev/null
  t1=$(date +%s%N)
  wait_for "EndpointSlice for $ns/web with $ip ready on $node" 30 slice_has "$ip true $node"
  say "selftest: the EndpointSlice controller wrote $ip (ready, on $node) $(( ($(date +%s%N) - t1) / 1000000 )) ms after the status patch"
  # What kube-ipvs needs (deploy/rbac.yaml), through its own token...
  "${kipvs[@]}" get services,nodes -A -o name >/dev/null || { say "selftest: FAIL kube-ipvs cannot list services/nodes"; fail=1; }
  "${kipvs[@]}" get endpointslices.discovery.k8s.io -A -o name >/dev/null || { say "selftest: FAIL kube-ipvs cannot list endpointslices"; fail=1; }
  # ...and what it must never do, asked of the authorizer as its identity.
  local sa=system:serviceaccount:kube-system:kube-ipvs verb
  for verb in "get secrets" "list secrets" "update services" "patch services" "delete endpointslices.discovery.k8s.io"; do
    # shellcheck disable=SC2086
    if "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" auth can-i $verb -A --as="$sa" >/dev/null 2>&1; then
      say "selftest: FAIL $sa can $verb"; fail=1
    fi
  done
  for verb in "watch services" "watch endpointslices.discovery.k8s.io" "list nodes" "create events.events.k8s.io"; do
    # shellcheck disable=SC2086
    "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" auth can-i $verb -A --as="$sa" >/dev/null 2>&1 \
      || { say "selftest: FAIL $sa cannot $verb"; fail=1; }
  done
  if "${kipvs[@]}" get secrets -A >/dev/null 2>&1; then say "selftest: FAIL kube-ipvs's token read Secrets"; fail=1; fi
  # No namespace controller runs, so deleting the namespace would leave its
  # objects behind (and web's VIP in every kube-ipvs watching): delete them.
  "${k[@]}" delete service web >/dev/null
  "${k[@]}" delete pod web-0 --grace-period=0 --force >/dev/null 2>&1
  "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" delete namespace "$ns" --wait=false >/dev/null
  [ "$fail" = 0 ] || die "selftest failed (logs in $logs)"
  say "selftest: passed in $((SECONDS - t0)) s"
}

# slice_has LINE: a line "IP READY NODE" of web's EndpointSlices equals LINE.
slice_has() {
  "${k[@]}" get endpointslices -l kubernetes.io/service-name=web \
    -o 'jsonpath={range .items[*].endpoints[*]}{.addresses[0]} {.conditions.ready} {.nodeName}{"\n"}{end}' | grep -qx "$1"
}

case "${1:-}" in
  up) up ;;
  down) down; say "down" ;;
  status)
    bin=$(cd "$cache/bin" 2>/dev/null && pwd) || exit 1
    alive etcd && alive kube-apiserver && alive kube-controller-manager && ready ;;
  selftest) selftest ;;
  outage) outage "${2:-}" ;;
  agent) exec python3 "$here/control-plane-agent.py" serve "$agent_port" "$here/control-plane.sh" ;;
  -h|--help) sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "usage: control-plane.sh up|down|status|selftest|outage SECONDS|agent" ;;
esac
