#!/usr/bin/env bash
# Runs a command as root on a kernel that has IPVS, streaming its output and
# exiting with its exit status.
#
#   scripts/kernel-lab.sh [--kernel K] [--timeout S] [--cpus N] [--memory M] [--net] -- CMD [ARGS...]
#   scripts/kernel-lab.sh --prepare [--kernel K]...   install and cache the prerequisites only
#
# If IPVS is already available here (a real node) and no other kernel is asked
# for, CMD runs directly. Otherwise the lab boots a Debian kernel under qemu
# with virtme-ng, sharing the host filesystem read-only, so CMD sees the same
# binaries and files. The guest loads the modules with
# scripts/load-modules.sh and brings lo up before CMD runs.
#
# --kernel K (or KUBE_IPVS_LAB_KERNEL=K) picks the kernel: `stock` (the
# default: the version behind linux-image-amd64), a line such as `6.1` or
# `6.12` (the newest linux-image-<line>.*-amd64 apt knows), or an exact
# version such as `6.12.57+deb12-amd64`. --prepare takes --kernel several
# times (or "K1,K2") to cache several kernels.
#
# Prerequisites are installed on first use and cached in $KUBE_IPVS_LAB_CACHE
# (default ~/.cache/kube-ipvs-lab): qemu and the test tools via apt, virtme-ng
# in a venv, the kernel package unpacked. CMD sees KUBE_IPVS_LAB=host|vm.
#
# --net gives the guest qemu user networking (eth0, static 10.0.2.15): the guest
# reaches the host's loopback as 10.0.2.2, which is how kube-ipvs in the guest
# talks to scripts/control-plane.sh's apiserver (KUBECONFIG_KUBE_IPVS_GUEST).
# It is in the guest's initial network namespace only. On a real node it is a
# no-op: use 127.0.0.1 (KUBECONFIG_KUBE_IPVS) there.
#
# Exit status: CMD's own; 124 on timeout; 125 if the lab itself failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
timeout_s=1800
cpus=$(nproc 2>/dev/null || echo 2)
memory=2G
prepare_only=0
net_args=()
kernels=()
VIRTME_NG_VERSION=1.42
# What the guest needs from the host root, besides qemu itself.
GUEST_PACKAGES=(ipvsadm ipset iptables iproute2 kmod busybox-static strace conntrack)

die() { echo "kernel-lab: $*" >&2; exit 125; }
say() { echo "kernel-lab: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout_s=${2:?--timeout needs seconds}; shift 2 ;;
    --cpus) cpus=${2:?--cpus needs a count}; shift 2 ;;
    --memory) memory=${2:?--memory needs a size like 2G}; shift 2 ;;
    --prepare) prepare_only=1; shift ;;
    --kernel) IFS=', ' read -ra ks <<<"${2:?--kernel needs stock, a line like 6.12, or a version}"; kernels+=("${ks[@]}"); shift 2 ;;
    # No DHCP: virtme-ng's udhcpc hangs the boot on Debian's modular kernel
    # (virtio_net is not in its initramfs); the guest sets a static address.
    --net) net_args=(--network user --no-dhcp); shift ;;
    --) shift; break ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option '$1' (usage: kernel-lab.sh [--kernel K] [--timeout S] [--cpus N] [--memory M] [--net] -- CMD [ARGS...])" ;;
  esac
done
case "$timeout_s" in ''|*[!0-9]*) die "--timeout takes whole seconds, not '$timeout_s'" ;; esac
if [ "$prepare_only" = 0 ] && [ $# -eq 0 ]; then
  die "no command given (usage: kernel-lab.sh [options] -- CMD [ARGS...])"
fi
if [ ${#kernels[@]} -eq 0 ]; then
  IFS=', ' read -ra kernels <<<"${KUBE_IPVS_LAB_KERNEL:-stock}"
  [ ${#kernels[@]} -gt 0 ] || kernels=(stock)
fi
for k in "${kernels[@]}"; do
  # Names go into apt and grep patterns: accept only what a version can hold.
  case "$k" in
    stock) ;;
    ''|*[!0-9A-Za-z.+~-]*) die "--kernel '$k' is not stock, a line like 6.12, or a version like 6.12.57+deb12-amd64" ;;
  esac
done
if [ "$prepare_only" = 0 ] && [ ${#kernels[@]} -ne 1 ]; then
  die "one kernel per run (got ${kernels[*]}); several are for --prepare only"
fi

cache=${KUBE_IPVS_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-ipvs-lab}

ipvs_here() {
  [ -e /proc/net/ip_vs ] && return 0
  [ "$(id -u)" = 0 ] && command -v modprobe >/dev/null 2>&1 && modprobe ip_vs 2>/dev/null
  [ -e /proc/net/ip_vs ]
}

apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to install $* with apt (or install them yourself)"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
  say "installing $* with apt"
  # A fresh machine has no package lists yet.
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >"$cache/apt.log" 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update >>"$cache/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$cache/apt.log" 2>&1 \
      || { tail -20 "$cache/apt.log" >&2; die "could not install $* (see $cache/apt.log)"; }
  fi
}

prepare_tools() {
  local missing=()
  command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
  command -v ipvsadm >/dev/null 2>&1 || missing+=(ipvsadm)
  command -v ipset >/dev/null 2>&1 || missing+=(ipset)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v modprobe >/dev/null 2>&1 || missing+=(kmod)
  command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
  command -v strace >/dev/null 2>&1 || missing+=(strace)
  command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
  # The differential tests scrape upstream kube-proxy's chunked /metrics with it.
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  # kube-proxy --proxy-mode=nftables (scripts/bench-upstream.sh) runs nft.
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

prepare_vng() {
  vng="$cache/venv/bin/vng"
  # vng runs virtme-run and friends from the same venv.
  PATH="$cache/venv/bin:$PATH"
  if [ -x "$vng" ] && [ "$("$vng" --version 2>/dev/null)" = "virtme-ng $VIRTME_NG_VERSION" ]; then
    return
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 not found: it is needed for virtme-ng"
  say "installing virtme-ng $VIRTME_NG_VERSION into $cache/venv"
  rm -rf "$cache/venv"
  python3 -m venv "$cache/venv" >"$cache/pip.log" 2>&1 || { cat "$cache/pip.log" >&2; die "python3 -m venv failed (install python3-venv)"; }
  "$cache/venv/bin/pip" install -q "virtme-ng==$VIRTME_NG_VERSION" >>"$cache/pip.log" 2>&1 \
    || { tail -20 "$cache/pip.log" >&2; die "pip could not install virtme-ng (see $cache/pip.log)"; }
}

# Prints the package of kernel spec $1 that apt knows, or nothing.
#   stock           what linux-image-amd64 depends on
#   6.1, 6.12 ...   the newest linux-image-<line>.*-amd64 (signed, generic
#                   flavour: not -rt, -cloud, -dbg or -unsigned)
#   anything else   an exact version: linux-image-<version>
resolve_kernel_apt() {
  case "$1" in
    stock)
      apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1 ;;
    *.*.*|*-*)
      apt-cache show "linux-image-$1" >/dev/null 2>&1 && echo "linux-image-$1" ;;
    *)
      # 6.1 names its packages 6.1.0-N-amd64, 6.12 names them 6.12.N+deb12-amd64;
      # "6.1" must not match 6.12, hence the [.-] right after the line.
      apt-cache pkgnames "linux-image-$1" 2>/dev/null \
        | grep -E "^linux-image-${1//./\\.}[.-][0-9][0-9.]*(-[0-9]+)?(\+deb[0-9.u]+)?-amd64\$" \
        | sort -V | tail -1 ;;
  esac
}

# The same among the kernels already cached (offline use).
resolve_kernel_cached() {
  local all
  all=$(ls -1 "$cache/kernels" 2>/dev/null | sort -V)
  case "$1" in
    stock) tail -1 <<<"$all" ;;
    *.*.*|*-*) grep -Fx "linux-image-$1" <<<"$all" ;;
    *) grep -E "^linux-image-${1//./\\.}[.-]" <<<"$all" | tail -1 ;;
  esac
}

# Sets kver and vmlinuz for kernel spec $1 (see resolve_kernel_apt), unpacked.
prepare_kernel() {
  local spec=$1 pkg=""
  pkg=$(resolve_kernel_apt "$spec") || true
  if [ -z "$pkg" ]; then
    apt-get update >>"$cache/apt.log" 2>&1 || true
    pkg=$(resolve_kernel_apt "$spec") || true
  fi
  if [ -z "$pkg" ]; then
    # Offline: use the newest matching kernel already cached.
    pkg=$(resolve_kernel_cached "$spec") || true
    [ -n "$pkg" ] || die "apt knows no kernel for '$spec' (try apt-cache search linux-image-$spec) and none is cached in $cache/kernels"
    say "apt cannot resolve kernel '$spec'; using cached $pkg"
  fi
  kver=${pkg#linux-image-}
  local root="$cache/kernels/$pkg"
  vmlinuz="$root/boot/vmlinuz-$kver"
  if [ ! -f "$root/.complete" ]; then
    say "downloading and unpacking $pkg"
    rm -rf "$root" "$cache/dl"; mkdir -p "$root" "$cache/dl"
    ( cd "$cache/dl" && apt-get download "$pkg" ) >>"$cache/apt.log" 2>&1 \
      || { tail -5 "$cache/apt.log" >&2; die "apt-get download $pkg failed"; }
    dpkg-deb -x "$cache"/dl/"$pkg"_*.deb "$root" || die "dpkg-deb could not unpack $pkg"
    rm -rf "$cache/dl"
    # The package ships no modules.dep: depmod builds it so modprobe works in the guest.
    depmod -b "$root" "$kver" || die "depmod failed for $kver"
    grep -q "ip_vs.ko" "$root/lib/modules/$kver/modules.dep" || die "$pkg has no ip_vs module"
    grep -q "9p.ko" "$root/lib/modules/$kver/modules.dep" || die "$pkg has no 9p module (the cloud flavour lacks it)"
    touch "$root/.complete"
  fi
  [ -f "$vmlinuz" ] || die "$vmlinuz missing"
  # The guest's root is the host's, so its modprobe reads /lib/modules/$kver here.
  local mods=/lib/modules/$kver
  if [ ! -e "$mods" ] || [ -L "$mods" ]; then
    [ "$(id -u)" = 0 ] || die "need root to link $mods to the unpacked kernel"
    mkdir -p /lib/modules
    ln -sfn "$root/lib/modules/$kver" "$mods"
  fi
}

mkdir -p "$cache"
if [ "$prepare_only" = 1 ]; then
  prepare_tools; prepare_vng
  ready=()
  for k in "${kernels[@]}"; do prepare_kernel "$k"; ready+=("$kver"); done
  say "ready: kernel ${ready[*]}, $("$vng" --version 2>/dev/null | head -1)"
  exit 0
fi

# Whether the running kernel is the one asked for: any is, unless a line or
# version was named.
host_kernel_fits() {
  local r
  r=$(uname -r)
  case "${kernels[0]}" in
    stock) return 0 ;;
    *.*.*|*-*) [ "$r" = "${kernels[0]}" ] ;;
    *) case "$r" in "${kernels[0]}".*|"${kernels[0]}"-*) return 0 ;; *) return 1 ;; esac ;;
  esac
}

if host_kernel_fits && ipvs_here; then
  # A real node, or a kernel that loaded ip_vs: no VM needed.
  [ "$(id -u)" = 0 ] || die "the lab runs commands as root; rerun with sudo"
  "$here/load-modules.sh" >&2 || die "required modules are missing on this kernel"
  export KUBE_IPVS_LAB=host
  exec "$@"
fi

prepare_tools; prepare_vng; prepare_kernel "${kernels[0]}"
say "booting $kver"

mkdir -p "$cache/runs"
run=$(mktemp -d "$cache/runs/run.XXXXXX")
: >"$run/stdout"; : >"$run/stderr"

# The guest starts with a clean environment: pass on what tests and tools read.
{
  echo "#!/bin/bash"
  for v in PATH HOME USER LANG RUST_BACKTRACE RUST_LOG RUST_TEST_THREADS $(compgen -e | grep -E '^(KUBE_IPVS_|CARGO_)' || true); do
    [ -n "${!v+x}" ] && printf 'export %s=%q\n' "$v" "${!v}"
  done
  echo "export KUBE_IPVS_LAB=vm"
  printf 'cd %q || exit 125\n' "$PWD"
  printf 'if ! %q >%q 2>&1; then echo "kernel-lab: load-modules.sh failed in the guest:" >&2; cat %q >&2; echo 125 >%q; exit 0; fi\n' \
    "$here/load-modules.sh" "$run/modules.log" "$run/modules.log" "$run/status"
  echo "ip link set lo up"
  if [ ${#net_args[@]} -gt 0 ]; then
    # qemu user networking (slirp): any address in 10.0.2.0/24 works, the
    # host is 10.0.2.2. Fixed, so the run needs no DHCP.
    printf 'modprobe virtio_net 2>/dev/null; dev=$(ls /sys/class/net | grep -v "^lo$" | head -1)\n'
    printf 'if [ -z "$dev" ] || ! { ip link set "$dev" up && ip addr add 10.0.2.15/24 dev "$dev" && ip route add default via 10.0.2.2; }; then echo "kernel-lab: --net: no network device in the guest" >&2; echo 125 >%q; exit 0; fi\n' "$run/status"
  fi
  printf '%q ' "$@"; printf '>>%q 2>>%q </dev/null\n' "$run/stdout" "$run/stderr"
  printf 'echo $? >%q\n' "$run/status"
} >"$run/guest.sh"
chmod +x "$run/guest.sh"

cleanup() {
  [ -n "${vpid:-}" ] && kill -KILL -- "-$vpid" 2>/dev/null || true
  [ -n "${t1:-}" ] && kill "$t1" 2>/dev/null || true
  [ -n "${t2:-}" ] && kill "$t2" 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# timeout makes itself a process group leader and, on expiry, signals the
# whole group: vng and the qemu it starts go together, and nothing else is
# left running to watch the clock.
timeout -k 5 "$timeout_s" "$vng" -r "$vmlinuz" --disable-kvm --cpus "$cpus" --memory "$memory" \
  "${net_args[@]}" --rwdir="$run" --exec "/bin/bash $run/guest.sh" -v >"$run/boot.log" 2>&1 </dev/null &
vpid=$!
# Stream what the guest writes through the shared folder as it arrives.
tail -s 0.2 -n +1 -f --pid="$vpid" "$run/stdout" &
t1=$!
tail -s 0.2 -n +1 -f --pid="$vpid" "$run/stderr" >&2 &
t2=$!
vng_rc=0
wait "$vpid" || vng_rc=$?
wait "$t1" "$t2" 2>/dev/null || true
t1=; t2=
cleanup; vpid=

if [ ! -s "$run/status" ] && { [ "$vng_rc" = 124 ] || [ "$vng_rc" = 137 ]; }; then
  say "timed out after ${timeout_s}s; the VM was killed (logs in $run)"
  exit 124
fi
if [ ! -s "$run/status" ]; then
  say "the VM did not run the command to completion; last lines of $run/boot.log:"
  tail -40 "$run/boot.log" >&2
  exit 125
fi
status=$(cat "$run/status")
# A finished run's folder goes; failed ones (kept above for their logs) are
# pruned after a day. Never touch other runs: labs may run concurrently.
rm -rf "$run"
find "$cache/runs" -mindepth 1 -maxdepth 1 -name 'run.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
exit "$status"
