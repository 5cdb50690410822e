//! A lab network namespace's way out to the host's control plane (10.0.2.2): a veth to the guest's initial namespace, forwarded and masqueraded onto qemu's user network.
//!
//! Shared by the benchmarks (`examples/lab`) and the kernel tests
//! (`tests/common`, through `#[path]`): one copy of the addressing.

use std::process::Command;

/// This end's address: the lab Node's InternalIP (scripts/control-plane.sh).
pub const NODE_IP: &str = "192.168.100.10";
/// This end's IPv6 address, for tests of a dual-stack node (the guest has no
/// IPv6 route out; nothing reaches the host through it).
pub const NODE_IP6: &str = "fd00:100::10";

/// Gives the calling thread's network namespace a default route to the
/// guest's initial namespace (which `kernel-lab.sh --net` connects to qemu's
/// user network), as a node has an uplink. `NODE_IP` is this end's address.
/// The veth goes with the namespace; the masquerade rule is added once.
pub fn uplink() -> Result<(), String> {
    let run = |cmd: String| -> Result<(), String> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .map_err(|e| format!("spawn `{cmd}`: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{cmd}` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    // A previous namespace's pair may outlive it briefly (namespaces are
    // torn down asynchronously): deleting one end deletes both.
    let _ = run("nsenter -t 1 -n ip link del cp-host 2>/dev/null".into());
    // `netns 1`: the peer goes to PID 1's namespace, the guest's initial one.
    // A fixed MAC gives a fixed IPv6 link-local address: every namespace
    // made by this is the same node, address for address (the differential
    // tests compare what two proxies do on "the same" node).
    run("ip link add cp0 address 02:00:c0:a8:64:0a type veth peer name cp-host netns 1".into())?;
    run(format!(
        "ip addr add {NODE_IP}/24 dev cp0 && ip addr add {NODE_IP6}/64 dev cp0 nodad \
         && ip link set cp0 up && ip route add default via 192.168.100.1"
    ))?;
    run("nsenter -t 1 -n sh -c 'ip addr add 192.168.100.1/24 dev cp-host && ip link set cp-host up \
         && sysctl -qw net.ipv4.ip_forward=1 \
         && { iptables -t nat -C POSTROUTING -s 192.168.100.0/24 -j MASQUERADE 2>/dev/null \
              || iptables -t nat -A POSTROUTING -s 192.168.100.0/24 -j MASQUERADE; }'"
        .into())
}
