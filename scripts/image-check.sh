#!/usr/bin/env bash
# Checks the container image on a kernel with IPVS: the image's own
# load-modules.sh (its modprobe loads the schedulers, unloaded first), then
# its kube-ipvs `sync-once` on examples/manifests with its own iptables, in a
# fresh network namespace of the lab. The kernel is then read with the lab's
# ipvsadm, ipset, iptables-save and ip, and compared with the image's
# `kube-ipvs plan`.
#
#   scripts/image-check.sh [IMAGE]     default kube-ipvs:0.1.0, built from
#                                      deploy/Dockerfile if not there yet
#
# Needs a Docker engine that can reach the base images; CI machines have none,
# so this is not part of scripts/test.sh. Exit status 0 only if every check held.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
die() { echo "image-check: $*" >&2; exit 1; }

if [ "${1:-}" = "--guest" ]; then
  # Inside the lab, as root: $2 is the unpacked image (read-only here).
  img=$2
  kver=$(uname -r)
  # What the DaemonSet mounts into the pod: the host's /lib/modules, /run
  # (xtables.lock), and here the example manifests.
  mount -t tmpfs none "$img/lib/modules"
  mkdir "$img/lib/modules/$kver"
  mount --bind "$(readlink -f "/lib/modules/$kver")" "$img/lib/modules/$kver"
  mount -t tmpfs none "$img/run"
  mount -t tmpfs none "$img/tmp"
  mount --rbind /dev "$img/dev"
  mount --bind "$root/examples/manifests" "$img/mnt"
  in_image() { chroot "$img" "$@"; }

  # The lab loaded every module before this runs: unload the schedulers
  # (unused yet) so that the image's own modprobe must load them.
  unloaded=()
  for m in ip_vs_wrr ip_vs_lc ip_vs_sh ip_vs_wlc ip_vs_sed ip_vs_nq ip_vs_mh ip_vs_dh \
           ip_vs_lblc ip_vs_lblcr ip_vs_fo ip_vs_ovf; do
    modprobe -r "$m" 2>/dev/null && unloaded+=("$m")
  done
  [ ${#unloaded[@]} -gt 0 ] || die "could not unload any scheduler module"
  echo "== the image's load-modules.sh ($(in_image modprobe --version | head -1)), after unloading ${#unloaded[@]} schedulers"
  mount -t proc proc "$img/proc"
  mount -t sysfs sysfs "$img/sys"
  loaded=$(in_image /usr/local/bin/load-modules.sh)
  echo "$loaded"
  umount "$img/sys" "$img/proc"
  for m in "${unloaded[@]}"; do
    grep -qE "^$m +loaded$" <<<"$loaded" || die "the image's load-modules.sh did not load $m"
  done
  echo "ok: the image's modprobe loaded ${unloaded[*]}"

  # A fresh network namespace, as a node's: proc and sys mounted inside it
  # so that /proc/sys/net and /sys/class/net are the namespace's own.
  export img
  unshare --net --mount --propagation private bash -euo pipefail -c '
    ip link set lo up
    mount -t proc proc "$img/proc"
    mount -t sysfs sysfs "$img/sys"
    in_image() { chroot "$img" "$@"; }
    section() { awk -v h="$1" '"'"'$0 == h {on=1; next} /^# / {on=0} on && NF'"'"'; }
    norm_sets() { sed -E "s/ (hashsize|bucketsize|initval) [^ ]+//g" | sort; }
    fail=0
    check() { if [ "$2" = "$3" ]; then echo "ok: $1"; else echo "DIFFERENT: $1"; diff <(echo "$2") <(echo "$3") | head -20; fail=1; fi; }

    echo "== the image'"'"'s kube-ipvs $(in_image kube-ipvs --version | cut -d" " -f2): sync-once --manifests examples/manifests"
    in_image kube-ipvs plan --node lab-node --manifests /mnt >/tmp/plan
    RUST_LOG=info NO_COLOR=1 in_image kube-ipvs sync-once --node lab-node --manifests /mnt 2>&1 | tail -3
    echo "== the kernel, read with the lab'"'"'s tools, against the image'"'"'s kube-ipvs plan"
    check "ipvsadm -Sn ($(ipvsadm -Sn | grep -c "^-A") services, $(ipvsadm -Sn | grep -c "^-a") real servers)" \
      "$(section "# IPVS (ipvsadm -Sn)" </tmp/plan | sort)" "$(ipvsadm -Sn | sort)"
    check "ipset save ($(ipset save | grep -c "^create") sets, $(ipset save | grep -c "^add") entries)" \
      "$(section "# ipsets (ipset save)" </tmp/plan | norm_sets)" "$(ipset save | norm_sets)"
    check "kube-ipvs0 addresses ($(ip -o addr show dev kube-ipvs0 | grep -c inet))" \
      "$(section "# kube-ipvs0 addresses" </tmp/plan | sort)" \
      "$(ip -o addr show dev kube-ipvs0 | awk "{print \$4}" | grep -v "^fe80:" | sort)"
    lab=$(iptables-save | grep -E "^(\*|:KUBE-|-A )" | sed -E "s/ \[[0-9]+:[0-9]+\]//")
    ours=$(in_image iptables-save | grep -E "^(\*|:KUBE-|-A )" | sed -E "s/ \[[0-9]+:[0-9]+\]//")
    check "iptables-save of the lab and of the image agree ($(grep -c "^-A" <<<"$lab") rules)" "$lab" "$ours"
    grep -q "^-A KUBE-SERVICES" <<<"$lab" || { echo "DIFFERENT: no KUBE-SERVICES rules"; fail=1; }
    ipvsadm -Ln | head -12
    exit $fail
  '
  exit $?
fi

image=${1:-kube-ipvs:0.1.0}
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd)"
if ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "== docker build -f deploy/Dockerfile -t $image ."
  (cd "$root" && docker build -f deploy/Dockerfile -t "$image" .)
fi
docker image inspect "$image" --format '== image {{.RepoTags}}: {{.Size}} bytes, entrypoint {{.Config.Entrypoint}}'
# The guest sees the host's filesystem but has its own /tmp and /var/tmp:
# unpack into the lab's cache, which it reads its modules from.
cache=${KUBE_IPVS_LAB_CACHE:-$HOME/.cache/kube-ipvs-lab}
mkdir -p "$cache"
unpacked=$(mktemp -d "$cache/image.XXXXXX")
trap 'rm -rf "$unpacked"' EXIT
cid=$(docker create "$image")
docker export "$cid" | tar -C "$unpacked" -x
docker rm "$cid" >/dev/null
for d in lib/modules run tmp dev mnt proc sys; do
  [ -d "$unpacked/$d" ] || mkdir -p "$unpacked/$d"
done
"$here/kernel-lab.sh" --timeout 600 -- "$here/image-check.sh" --guest "$unpacked"
