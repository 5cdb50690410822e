#!/usr/bin/env bash
# Loads the kernel modules kube-ipvs needs: IPVS and its schedulers, conntrack,
# dummy, ip_set with the set types the proxier uses, xt_set and xt_ipvs.
# Run it at node boot or from the DaemonSet's init container. Idempotent.
#
#   scripts/load-modules.sh           load what is missing, report each module
#   scripts/load-modules.sh --check   only report; exit 1 if a required module is absent
#
# Each module is reported as: loaded (just now), already loaded, built in,
# available (--check: present on disk, not loaded) or missing.
set -u

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "load-modules.sh: unknown argument '$1' (use --check or nothing)" >&2; exit 2 ;;
esac

kver=$(uname -r)
moddir=/lib/modules/$kver

# Kernels before 4.19 split IPv4 conntrack into nf_conntrack_ipv4.
conntrack=nf_conntrack
kmaj=${kver%%.*}; krest=${kver#*.}; kmin=${krest%%.*}
if [ "$kmaj" -lt 4 ] || { [ "$kmaj" -eq 4 ] && [ "$kmin" -lt 19 ]; }; then
  conntrack=nf_conntrack_ipv4
fi

# module|feature that needs it
required=(
  "ip_vs|IPVS virtual services (the whole proxier)"
  "ip_vs_rr|the rr scheduler (the default)"
  "ip_vs_wrr|the wrr scheduler"
  "ip_vs_lc|the lc scheduler"
  "ip_vs_sh|the sh scheduler"
  "$conntrack|masquerade (SNAT) and conntrack cleanup for UDP/SCTP endpoints"
  "dummy|the kube-ipvs0 dummy interface that holds service addresses"
  "ip_set|the KUBE-* ipsets matched by the iptables rules"
  "ip_set_hash_ip|hash:ip sets (KUBE-IPVS-IPS)"
  "ip_set_hash_ipport|hash:ip,port sets (KUBE-CLUSTER-IP, KUBE-EXTERNAL-IP, KUBE-LOAD-BALANCER...)"
  "ip_set_hash_ipportip|hash:ip,port,ip sets (KUBE-LOOP-BACK, KUBE-LOAD-BALANCER-SOURCE-IP)"
  "ip_set_hash_ipportnet|hash:ip,port,net sets (KUBE-LOAD-BALANCER-SOURCE-CIDR)"
  "ip_set_hash_net|hash:net sets"
  "ip_set_bitmap_port|bitmap:port sets (KUBE-NODE-PORT-TCP/UDP, KUBE-HEALTH-CHECK-NODE-PORT)"
  "xt_set|iptables --match-set rules on the KUBE-* sets"
  "xt_ipvs|iptables -m ipvs matches"
)
optional=(ip_vs_wlc ip_vs_sed ip_vs_nq ip_vs_mh ip_vs_dh ip_vs_lblc ip_vs_lblcr ip_vs_fo ip_vs_ovf)

is_builtin() {
  [ -r "$moddir/modules.builtin" ] && grep -qE "/$1\.ko(\..*)?\$" "$moddir/modules.builtin"
}

is_loaded() {
  [ -d "/sys/module/$1" ]
}

on_disk() {
  command -v modinfo >/dev/null 2>&1 && modinfo -n "$1" >/dev/null 2>&1
}

# Prints the module's state; returns 0 if it is (now) usable.
handle() {
  local m=$1
  if is_builtin "$m"; then echo "built in"; return 0; fi
  if is_loaded "$m"; then echo "already loaded"; return 0; fi
  if [ "$check_only" = 1 ]; then
    if on_disk "$m"; then echo "available (not loaded)"; else echo "missing"; fi
    return 1
  fi
  if ! command -v modprobe >/dev/null 2>&1; then echo "missing (no modprobe: install kmod)"; return 1; fi
  local err
  if err=$(modprobe "$m" 2>&1); then echo "loaded"; return 0; fi
  echo "missing (${err:-modprobe failed})"
  return 1
}

failed=0
for entry in "${required[@]}"; do
  m=${entry%%|*}; feature=${entry#*|}
  state=$(handle "$m") && ok=1 || ok=0
  printf '%-24s %s\n' "$m" "$state"
  if [ "$ok" = 0 ]; then
    echo "error: required module $m is not available; it is needed for $feature. Install the kernel's modules package (linux-modules-$kver or linux-image-$kver) or build it into the kernel." >&2
    failed=1
  fi
done
for m in "${optional[@]}"; do
  state=$(handle "$m") && ok=1 || ok=0
  printf '%-24s %s\n' "$m" "$state"
  if [ "$ok" = 0 ] && [ "$check_only" = 0 ]; then
    echo "warning: optional scheduler module $m is not available; services asking for scheduler ${m#ip_vs_} will fail" >&2
  fi
done

if [ "$failed" = 1 ]; then
  echo "load-modules.sh: required modules are missing (see errors above)" >&2
  exit 1
fi
exit 0
