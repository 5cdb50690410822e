//! Real-traffic topology for kernel tests: pod and client namespaces on veths around the test's node namespace, servers answering with the pod's name, clients, and manifests.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use super::{sh, try_sh};

/// The node's address on the client network (the Node object's InternalIP).
pub const NODE_IP: &str = "192.168.100.10";
/// The first client, inside the node's subnet.
pub const CLIENT_IP: &str = "192.168.100.2";
/// The second client, on a subnet of its own (192.168.101.0/24, node at .1).
pub const CLIENT2_IP: &str = "192.168.101.2";
/// The IPv6 twins of the addresses above, on the same links: [`topology`]
/// gives every namespace both families (pod `i` has fd00:10:244:i::2).
pub const NODE_IP6: &str = "fd00:192:168:100::10";
pub const CLIENT_IP6: &str = "fd00:192:168:100::2";
pub const CLIENT2_IP6: &str = "fd00:192:168:101::2";
/// Every pod serves TCP here (greeting, then a line echo) and UDP on [`UDP_PORT`].
pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;
/// Pods serve SCTP here (one-to-one style, as TCP) once [`serve_sctp`] started it.
pub const SCTP_PORT: u16 = 9090;
/// The port of [`sctp_service`]s.
pub const SCTP_SERVICE_PORT: u16 = 7777;
/// Connect and read timeout of short client connections.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Pod `i` (1-based) has 10.244.i.2; the node's end of its veth has 10.244.i.1.
pub fn pod_ip(i: usize) -> String {
    format!("10.244.{i}.2")
}

pub fn node_side_ip(i: usize) -> String {
    format!("10.244.{i}.1")
}

pub fn pod_ip6(i: usize) -> String {
    format!("fd00:10:244:{i}::2")
}

pub fn node_side_ip6(i: usize) -> String {
    format!("fd00:10:244:{i}::1")
}

/// The node's end of the named pod's veth: the source a masqueraded
/// connection shows that pod.
pub fn node_side_of(pod: &str) -> String {
    node_side_ip(pod_number(pod))
}

/// 3 for "pod3".
pub fn pod_number(pod: &str) -> usize {
    pod.trim_start_matches("pod")
        .parse()
        .unwrap_or_else(|_| panic!("not a pod name: {pod:?}"))
}

/// The named namespaces of one test; deleted when dropped. The node is the
/// test thread's own namespace (see `common::netns`).
pub struct Topology {
    pub pods: Vec<String>,
    pub client: String,
    pub client2: String,
}

impl Topology {
    /// The namespace of pod `i` (1-based).
    pub fn pod(&self, i: usize) -> &str {
        &self.pods[i - 1]
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in self.pods.iter().chain([&self.client, &self.client2]) {
            let _ = try_sh(&format!("ip netns delete {n}"));
        }
    }
}

/// Runs `f` on a thread inside the named namespace and returns its result.
/// Sockets made there stay in that namespace wherever they are used later.
pub fn in_ns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in namespace")
}

/// Builds `pods` pods on veths (10.244.i.0/24 and fd00:10:244:i::/64 each)
/// and two clients, each running servers that answer as "pod<i>" on both
/// families. `tag` keeps namespace names unique between the tests of one binary.
pub fn topology(tag: &str, pods: usize) -> Topology {
    let pid = std::process::id();
    let t = Topology {
        pods: (1..=pods).map(|i| format!("kt{pid}{tag}p{i}")).collect(),
        client: format!("kt{pid}{tag}c"),
        client2: format!("kt{pid}{tag}d"),
    };
    // IPv6 addresses skip duplicate address detection (`nodad`): a
    // tentative address can be neither a source nor a destination for a second.
    sh("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
    for (k, ns) in t.pods.iter().enumerate() {
        let i = k + 1;
        sh(&format!(
            "ip netns add {ns} && ip link add vp{i} type veth peer name eth0 netns {ns} \
             && ip addr add {node}/24 dev vp{i} && ip addr add {node6}/64 dev vp{i} nodad \
             && ip link set vp{i} up \
             && ip -n {ns} link set lo up && ip -n {ns} addr add {pod}/24 dev eth0 \
             && ip -n {ns} addr add {pod6}/64 dev eth0 nodad \
             && ip -n {ns} link set eth0 up && ip -n {ns} route add default via {node} \
             && ip -n {ns} -6 route add default via {node6}",
            node = node_side_ip(i),
            pod = pod_ip(i),
            node6 = node_side_ip6(i),
            pod6 = pod_ip6(i),
        ));
        serve(ns, &format!("pod{i}"));
    }
    for (ns, link, node, client, node6, client6) in [
        (&t.client, "vc", NODE_IP, CLIENT_IP, NODE_IP6, CLIENT_IP6),
        (
            &t.client2,
            "vd",
            "192.168.101.1",
            CLIENT2_IP,
            "fd00:192:168:101::1",
            CLIENT2_IP6,
        ),
    ] {
        sh(&format!(
            "ip netns add {ns} && ip link add {link} type veth peer name eth0 netns {ns} \
             && ip addr add {node}/24 dev {link} && ip addr add {node6}/64 dev {link} nodad \
             && ip link set {link} up \
             && ip -n {ns} link set lo up && ip -n {ns} addr add {client}/24 dev eth0 \
             && ip -n {ns} addr add {client6}/64 dev eth0 nodad \
             && ip -n {ns} link set eth0 up && ip -n {ns} route add default via {node} \
             && ip -n {ns} -6 route add default via {node6}"
        ));
    }
    t
}

/// A TCP server on the calling thread's namespace at `port` answering
/// "node -" to every connection (a node service no Service exposes).
pub fn serve_node(port: u16) {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).expect("bind");
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"node -\n");
        }
    });
}

/// Starts the servers of pod `name` in namespace `ns`; their threads live
/// until the process exits. TCP: greets with "`name` `peer-ip`", then answers
/// each line with "`name` `line`". UDP: answers each datagram with
/// "`name` `peer-ip`".
fn serve(ns: &str, name: &str) {
    // `[::]` takes both families (net.ipv6.bindv6only is 0 in a new
    // namespace); an IPv4 peer shows as ::ffff:a.b.c.d, hence `to_canonical`.
    let (tcp, udp) = in_ns(ns, || {
        (
            TcpListener::bind(("::", TCP_PORT)).expect("bind TCP"),
            UdpSocket::bind(("::", UDP_PORT)).expect("bind UDP"),
        )
    });
    let n = name.to_string();
    std::thread::spawn(move || {
        for s in tcp.incoming().flatten() {
            let n = n.clone();
            std::thread::spawn(move || echo(s, &n));
        }
    });
    let n = name.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(format!("{n} {}", peer.ip().to_canonical()).as_bytes(), peer);
        }
    });
}

/// A one-to-one SCTP socket (IPv4).
fn sctp_socket() -> std::os::fd::OwnedFd {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType};
    socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Sctp,
    )
    .expect("an SCTP socket: is the sctp module loaded (modprobe sctp)?")
}

fn io_kind(e: nix::errno::Errno) -> std::io::ErrorKind {
    std::io::Error::from(e).kind()
}

/// Starts pod `i`'s SCTP server in its namespace: as the TCP one, greeting
/// with "pod<i> `peer-ip`", then echoing lines. Bound to the pod's address
/// only (single-homed: see [`Conn::open_sctp`]). Needs the `sctp` module.
pub fn serve_sctp(t: &Topology, i: usize) {
    use nix::sys::socket::{self, SockaddrIn, sockopt};
    let fd = in_ns(t.pod(i), move || {
        let fd = sctp_socket();
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
        let ip: Ipv4Addr = pod_ip(i).parse().unwrap();
        socket::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrIn::from(SocketAddrV4::new(ip, SCTP_PORT)),
        )
        .expect("bind SCTP");
        socket::listen(&fd, socket::Backlog::new(64).unwrap()).expect("listen SCTP");
        fd
    });
    let listener = TcpListener::from(fd);
    let name = format!("pod{i}");
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let n = name.clone();
            std::thread::spawn(move || echo(s, &n));
        }
    });
}

fn echo(mut s: TcpStream, name: &str) {
    let peer = s
        .peer_addr()
        .map(|a| a.ip().to_canonical().to_string())
        .unwrap_or_default();
    if s.write_all(format!("{name} {peer}\n").as_bytes()).is_err() {
        return;
    }
    let Ok(read) = s.try_clone() else { return };
    for line in BufReader::new(read).lines() {
        let Ok(line) = line else { return };
        if s.write_all(format!("{name} {line}\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// A connection to a pod server, kept open.
pub struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// The pod that answered.
    pub pod: String,
    /// The source address the pod saw.
    pub peer: String,
}

impl Conn {
    /// Connects from the calling thread's namespace and reads the greeting.
    pub fn open(addr: &str, timeout: Duration) -> Result<Conn, std::io::ErrorKind> {
        let a: SocketAddr = addr.parse().expect("socket address");
        let stream = TcpStream::connect_timeout(&a, timeout).map_err(|e| e.kind())?;
        Conn::greeted(stream, timeout)
    }

    /// [`Conn::open`] from source port `port` (SO_REUSEADDR, so a port whose
    /// last connection was reset can serve again): one flow of a hashing
    /// scheduler, repeatable.
    pub fn open_from_port(
        addr: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Conn, std::io::ErrorKind> {
        use nix::sys::socket::{self, AddressFamily, SockFlag, SockProtocol, SockType, sockopt};
        let a: SocketAddrV4 = addr.parse().expect("IPv4 socket address");
        let fd = socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Tcp,
        )
        .map_err(io_kind)?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io_kind)?;
        // A blocking connect gives up after SO_SNDTIMEO.
        let tv =
            nix::sys::time::TimeVal::new(timeout.as_secs() as i64, timeout.subsec_micros() as i64);
        socket::setsockopt(&fd, sockopt::SendTimeout, &tv).map_err(io_kind)?;
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        socket::bind(raw, &socket::SockaddrIn::new(0, 0, 0, 0, port)).map_err(io_kind)?;
        socket::connect(raw, &socket::SockaddrIn::from(a)).map_err(io_kind)?;
        Conn::greeted(TcpStream::from(fd), timeout)
    }

    /// [`Conn::open`] over an SCTP association from local address `local`
    /// (needs the `sctp` module). Both ends are single-homed (bound to one
    /// address), as SCTP through NAT needs: a multi-homed end lists its other
    /// addresses in INIT, the peer heartbeats them directly, past IPVS and the
    /// masquerading, and the node's stack answers those heartbeats with ABORT.
    pub fn open_sctp(
        local: &str,
        addr: &str,
        timeout: Duration,
    ) -> Result<Conn, std::io::ErrorKind> {
        use nix::sys::socket::{self, sockopt};
        let a: SocketAddrV4 = addr.parse().expect("IPv4 socket address");
        let l: Ipv4Addr = local.parse().expect("IPv4 address");
        let fd = sctp_socket();
        // connect() of an SCTP stream socket waits up to SO_SNDTIMEO
        // (sctp_wait_for_connect), not for every INIT retransmission.
        let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as i64, 0);
        socket::setsockopt(&fd, sockopt::SendTimeout, &tv).map_err(io_kind)?;
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        socket::bind(raw, &socket::SockaddrIn::from(SocketAddrV4::new(l, 0))).map_err(io_kind)?;
        socket::connect(raw, &socket::SockaddrIn::from(a)).map_err(io_kind)?;
        Conn::greeted(TcpStream::from(fd), timeout)
    }

    /// Reads the greeting on a connected stream (TCP, or SCTP one-to-one,
    /// whose socket reads and writes as TCP's does).
    fn greeted(stream: TcpStream, timeout: Duration) -> Result<Conn, std::io::ErrorKind> {
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.kind())?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.kind())?);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.kind())?;
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some(n), Some(p)) => Ok(Conn {
                pod: n.to_string(),
                peer: p.to_string(),
                stream,
                reader,
            }),
            _ => Err(std::io::ErrorKind::InvalidData),
        }
    }

    pub fn open_from(ns: &str, addr: &str, timeout: Duration) -> Result<Conn, std::io::ErrorKind> {
        let addr = addr.to_string();
        in_ns(ns, move || Conn::open(&addr, timeout))
    }

    /// Sends `msg` as a line; returns the pod that echoed it.
    pub fn exchange(&mut self, msg: &str) -> Result<String, String> {
        self.stream
            .write_all(format!("{msg}\n").as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("closed by the peer".into()),
            Ok(_) => match line.trim_end().split_once(' ') {
                Some((pod, echoed)) if echoed == msg => Ok(pod.to_string()),
                _ => Err(format!("unexpected answer {line:?} to {msg:?}")),
            },
            Err(e) => Err(format!("receive: {e}")),
        }
    }

    /// Closes with a reset (SO_LINGER 0), so IPVS forgets the connection
    /// after its short CLOSE timeout instead of TIME_WAIT's two minutes.
    pub fn reset(self) {
        let zero = nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        nix::sys::socket::setsockopt(&self.stream, nix::sys::socket::sockopt::Linger, &zero)
            .expect("SO_LINGER");
    }
}

/// One short connection from the calling thread's namespace: (pod, source it saw).
pub fn ask(addr: &str) -> Result<(String, String), std::io::ErrorKind> {
    Conn::open(addr, TIMEOUT).map(|c| (c.pod.clone(), c.peer.clone()))
}

pub fn ask_from(ns: &str, addr: &str) -> Result<(String, String), std::io::ErrorKind> {
    let addr = addr.to_string();
    in_ns(ns, move || ask(&addr))
}

/// Which pods answered `n` short connections to `addr` from the calling
/// thread's namespace (or from namespace `ns`); failures are counted under
/// "error <kind>".
pub fn spread(ns: Option<&str>, addr: &str, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = match ns {
            Some(ns) => ask_from(ns, addr),
            None => ask(addr),
        };
        let key = r.map_or_else(|e| format!("error {e:?}"), |(pod, _)| pod);
        *seen.entry(key).or_default() += 1;
    }
    seen
}

/// A UDP socket made in namespace `ns`, bound to `port` (0: any).
pub fn udp_socket_in(ns: &str, port: u16) -> UdpSocket {
    in_ns(ns, move || {
        UdpSocket::bind(("0.0.0.0", port)).expect("bind UDP client")
    })
}

// ---- manifests -------------------------------------------------------------

/// The Node object: lab-node with [`NODE_IP`].
pub fn node_yaml() -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: lab-node\nstatus:\n  addresses:\n  - type: InternalIP\n    address: {NODE_IP}\n"
    )
}

/// The Node object with an InternalIP of each family (a dual-stack node).
pub fn node_yaml_dual() -> String {
    format!(
        "{}  - type: InternalIP\n    address: {NODE_IP6}\n",
        node_yaml()
    )
}

/// Ready endpoints for the given pods on node `node`.
pub fn ready(pods: &[usize], node: &str) -> String {
    ready_at(pods, node, pod_ip)
}

/// [`ready`] with the pods' IPv6 addresses, for an IPv6 slice.
pub fn ready6(pods: &[usize], node: &str) -> String {
    ready_at(pods, node, pod_ip6)
}

fn ready_at(pods: &[usize], node: &str, ip: fn(usize) -> String) -> String {
    pods.iter()
        .map(|i| {
            format!(
                "- addresses: [{}]\n  nodeName: {node}\n  conditions: {{ready: true, serving: true, terminating: false}}\n",
                ip(*i)
            )
        })
        .collect()
}

/// A terminating endpoint that still serves (a pod being shut down).
pub fn terminating(pod: usize, node: &str) -> String {
    format!(
        "- addresses: [{}]\n  nodeName: {node}\n  conditions: {{ready: false, serving: true, terminating: true}}\n",
        pod_ip(pod)
    )
}

/// A TCP Service `name` (port 80 → pods' [`TCP_PORT`]) and its one
/// EndpointSlice. `extra_spec` and `port_extra` are indented spec lines
/// placed before the ports and inside the port.
pub fn tcp_service(
    name: &str,
    ip: &str,
    extra_spec: &str,
    port_extra: &str,
    endpoints: &str,
) -> String {
    service(
        name,
        ip,
        extra_spec,
        port_extra,
        ("http", "TCP", 80, TCP_PORT),
        endpoints,
    )
}

/// An SCTP Service `name` (port [`SCTP_SERVICE_PORT`] → pods' [`SCTP_PORT`]),
/// as [`tcp_service`].
pub fn sctp_service(
    name: &str,
    ip: &str,
    extra_spec: &str,
    port_extra: &str,
    endpoints: &str,
) -> String {
    let port = ("assoc", "SCTP", SCTP_SERVICE_PORT, SCTP_PORT);
    service(name, ip, extra_spec, port_extra, port, endpoints)
}

/// One Service with one port (name, protocol, port, targetPort) and its
/// IPv4 EndpointSlice.
fn service(
    name: &str,
    ip: &str,
    extra_spec: &str,
    port_extra: &str,
    (port_name, proto, port, target): (&str, &str, u16, u16),
    endpoints: &str,
) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  clusterIP: {ip}
{extra_spec}  ports:
  - name: {port_name}
    port: {port}
    protocol: {proto}
    targetPort: {target}
{port_extra}---
{slice}",
        slice = slice(name, "1", "IPv4", port_name, proto, target, endpoints)
    )
}

/// [`tcp_service`] for IPv6 only: `ip` is an IPv6 ClusterIP, `endpoints`
/// from [`ready6`].
pub fn tcp_service6(
    name: &str,
    ip: &str,
    extra_spec: &str,
    port_extra: &str,
    endpoints: &str,
) -> String {
    let v4 = tcp_service(name, ip, extra_spec, port_extra, endpoints);
    v4.replacen(
        "\nspec:\n",
        "\nspec:\n  ipFamilies: [IPv6]\n  ipFamilyPolicy: SingleStack\n",
        1,
    )
    .replacen("addressType: IPv4", "addressType: IPv6", 1)
}

/// A dual-stack TCP Service (port 80 → [`TCP_PORT`]): ClusterIPs `ip4` and
/// `ip6`, an IPv4 slice of `endpoints4` and an IPv6 slice of `endpoints6`.
pub fn dual_tcp_service(
    name: &str,
    ip4: &str,
    ip6: &str,
    extra_spec: &str,
    port_extra: &str,
    endpoints4: &str,
    endpoints6: &str,
) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: {ip4}
  clusterIPs: [{ip4}, {ip6}]
{extra_spec}  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: {TCP_PORT}
{port_extra}---
{v4}---
{v6}",
        v4 = slice(name, "v4", "IPv4", "http", "TCP", TCP_PORT, endpoints4),
        v6 = slice(name, "v6", "IPv6", "http", "TCP", TCP_PORT, endpoints6),
    )
}

/// A UDP Service `name` (port 53 → pods' [`UDP_PORT`]) and its EndpointSlice.
pub fn udp_service(name: &str, ip: &str, endpoints: &str) -> String {
    service(name, ip, "", "", ("dns", "UDP", 53, UDP_PORT), endpoints)
}

fn slice(
    name: &str,
    suffix: &str,
    family: &str,
    port_name: &str,
    proto: &str,
    port: u16,
    endpoints: &str,
) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{suffix}
  namespace: default
  labels:
    kubernetes.io/service-name: {name}
addressType: {family}
ports:
- name: {port_name}
  port: {port}
  protocol: {proto}
endpoints:
{endpoints}"
    )
}

/// `yaml` (from [`tcp_service`]) with one annotation on its Service.
pub fn annotated(yaml: &str, key: &str, value: &str) -> String {
    yaml.replacen(
        "  namespace: default\nspec:",
        &format!("  namespace: default\n  annotations:\n    {key}: {value}\nspec:"),
        1,
    )
}

/// `yaml` (from [`tcp_service`]) with a Service status of one load-balancer ingress IP.
pub fn with_lb_ingress(yaml: &str, ip: &str) -> String {
    yaml.replacen(
        "---\napiVersion: discovery.k8s.io/v1",
        &format!(
            "status:\n  loadBalancer:\n    ingress:\n    - ip: {ip}\n---\napiVersion: discovery.k8s.io/v1"
        ),
        1,
    )
}

/// Replaces `dir/file` atomically (a watcher never sees half a file).
pub fn write_atomically(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).expect("write manifest");
    std::fs::rename(&tmp, dir.join(file)).expect("rename manifest");
}
