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
/// Every pod serves TCP here (greeting, then a line echo) and UDP on [`UDP_PORT`].
pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;
/// Connect and read timeout of short client connections.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Pod `i` (1-based) has 10.244.i.2; the node's end of its veth has 10.244.i.1.
pub fn pod_ip(i: usize) -> String {
    format!("10.244.{i}.2")
}

pub fn node_side_ip(i: usize) -> String {
    format!("10.244.{i}.1")
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

/// Builds `pods` pods on veths (10.244.i.0/24 each) and two clients, each
/// running servers that answer as "pod<i>". `tag` keeps namespace names
/// unique between the tests of one binary.
pub fn topology(tag: &str, pods: usize) -> Topology {
    let pid = std::process::id();
    let t = Topology {
        pods: (1..=pods).map(|i| format!("kt{pid}{tag}p{i}")).collect(),
        client: format!("kt{pid}{tag}c"),
        client2: format!("kt{pid}{tag}d"),
    };
    sh("sysctl -qw net.ipv4.ip_forward=1");
    for (k, ns) in t.pods.iter().enumerate() {
        let i = k + 1;
        sh(&format!(
            "ip netns add {ns} && ip link add vp{i} type veth peer name eth0 netns {ns} \
             && ip addr add {node}/24 dev vp{i} && ip link set vp{i} up \
             && ip -n {ns} link set lo up && ip -n {ns} addr add {pod}/24 dev eth0 \
             && ip -n {ns} link set eth0 up && ip -n {ns} route add default via {node}",
            node = node_side_ip(i),
            pod = pod_ip(i),
        ));
        serve(ns, &format!("pod{i}"));
    }
    for (ns, link, node, client) in [
        (&t.client, "vc", NODE_IP, CLIENT_IP),
        (&t.client2, "vd", "192.168.101.1", CLIENT2_IP),
    ] {
        sh(&format!(
            "ip netns add {ns} && ip link add {link} type veth peer name eth0 netns {ns} \
             && ip addr add {node}/24 dev {link} && ip link set {link} up \
             && ip -n {ns} link set lo up && ip -n {ns} addr add {client}/24 dev eth0 \
             && ip -n {ns} link set eth0 up && ip -n {ns} route add default via {node}"
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
    let (tcp, udp) = in_ns(ns, || {
        (
            TcpListener::bind(("0.0.0.0", TCP_PORT)).expect("bind TCP"),
            UdpSocket::bind(("0.0.0.0", UDP_PORT)).expect("bind UDP"),
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
            let _ = udp.send_to(format!("{n} {}", peer.ip()).as_bytes(), peer);
        }
    });
}

fn echo(mut s: TcpStream, name: &str) {
    let peer = s
        .peer_addr()
        .map(|a| a.ip().to_string())
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

/// Ready endpoints for the given pods on node `node`.
pub fn ready(pods: &[usize], node: &str) -> String {
    pods.iter()
        .map(|i| {
            format!(
                "- addresses: [{}]\n  nodeName: {node}\n  conditions: {{ready: true, serving: true, terminating: false}}\n",
                pod_ip(*i)
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
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  clusterIP: {ip}
{extra_spec}  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: {TCP_PORT}
{port_extra}---
{slice}",
        slice = slice(name, "http", "TCP", TCP_PORT, endpoints)
    )
}

/// A UDP Service `name` (port 53 → pods' [`UDP_PORT`]) and its EndpointSlice.
pub fn udp_service(name: &str, ip: &str, endpoints: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  clusterIP: {ip}
  ports:
  - name: dns
    port: 53
    protocol: UDP
    targetPort: {UDP_PORT}
---
{slice}",
        slice = slice(name, "dns", "UDP", UDP_PORT, endpoints)
    )
}

fn slice(name: &str, port_name: &str, proto: &str, port: u16, endpoints: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
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
