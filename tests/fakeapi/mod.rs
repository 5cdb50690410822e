//! A fake Kubernetes API server for tests: real HTTP on 127.0.0.1 serving lists and watches of Services, EndpointSlices and Nodes, applying label and field selectors, with 410 Gone (watches and lists), outages and slow lists on demand.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The kinds served, by collection path.
pub const SERVICES: &str = "/api/v1/services";
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
pub const NODES: &str = "/api/v1/nodes";
const KINDS: [(&str, &str, &str); 3] = [
    (SERVICES, "ServiceList", "v1"),
    (SLICES, "EndpointSliceList", "discovery.k8s.io/v1"),
    (NODES, "NodeList", "v1"),
];

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    path: &'static str,
    kind: &'static str,
    obj: Value,
    /// The object before the change (for watches with a selector).
    prev: Option<Value>,
}

/// What watch connections receive.
#[derive(Debug, Clone)]
enum Msg {
    Change(Change),
    /// Every open watch gets an ERROR 410 event and is closed.
    Expire,
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    /// Objects by collection path, then "namespace/name".
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    history: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    /// Requests ("METHOD target"), in order, with when they arrived.
    requests: Vec<(Instant, String)>,
    /// Lists of a path still to be answered with 410 Gone.
    failing_lists: BTreeMap<&'static str, usize>,
    /// Bodies POSTed to any events collection.
    events: Vec<Value>,
    /// Delay before answering a list, by collection path.
    slow: BTreeMap<&'static str, Duration>,
    /// Bumped by `stop`: connections of an earlier epoch send nothing more.
    epoch: u64,
}

/// The server; `stop` and `start` take it down and up on the same port.
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    tx: broadcast::Sender<Msg>,
    task: Mutex<Option<JoinHandle<()>>>,
    dir: tempfile::TempDir,
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn key_of(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or_default(),
        m["name"].as_str().unwrap_or_default()
    )
}

fn path_of(obj: &Value) -> Option<&'static str> {
    match obj["kind"].as_str()? {
        "Service" => Some(SERVICES),
        "EndpointSlice" => Some(SLICES),
        "Node" => Some(NODES),
        _ => None,
    }
}

/// The JSON of a k8s-openapi object, with kind and apiVersion set.
pub fn to_json<K: k8s_openapi::Resource + Serialize>(obj: &K) -> Value {
    let mut v = serde_json::to_value(obj).expect("k8s-openapi objects serialise");
    v["kind"] = K::KIND.into();
    v["apiVersion"] = K::API_VERSION.into();
    v
}

/// The lab's Node `lab-node` at 192.168.100.10 (the kernel tests' node address).
pub fn lab_node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "lab-node"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.100.10"}]}
    })
}

/// A runtime and a fake API server holding `lab_node`, for kernel tests.
/// Call it after `common::netns()`: the runtime's threads and sockets live
/// in the namespace they are made in.
pub fn start_for_lab() -> (tokio::runtime::Runtime, Arc<FakeApi>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let api = rt.block_on(FakeApi::start());
    api.apply(lab_node());
    (rt, api)
}

/// The API server's own Service, `default/kubernetes` on 10.96.0.1:443.
pub fn kubernetes_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "default", "name": "kubernetes"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
    })
}

impl FakeApi {
    /// Starts on a free port.
    pub async fn start() -> Arc<FakeApi> {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("local addr");
        let (tx, _) = broadcast::channel(100_000);
        let api = Arc::new(FakeApi {
            addr,
            state: Arc::new(Mutex::new(State {
                rv: 100,
                ..Default::default()
            })),
            tx,
            task: Mutex::new(None),
            dir: tempfile::tempdir().expect("tempdir"),
        });
        // Every API server holds default/kubernetes (kube-ipvs holds a Service
        // list without it, see watch::ListGuard).
        api.apply(kubernetes_service());
        api.serve(l);
        api
    }

    fn serve(&self, l: TcpListener) {
        let state = self.state.clone();
        let tx = self.tx.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((c, _)) = l.accept().await else {
                    return;
                };
                conns.spawn(conn(c, state.clone(), tx.clone()));
                while conns.try_join_next().is_some() {}
            }
            // Dropping the JoinSet (on abort) closes every connection.
        });
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Takes the server down: the port is closed and open watches drop.
    pub fn stop(&self) {
        lock(&self.state).epoch += 1;
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }

    /// Brings the server back on the same port (retrying while it is busy).
    pub async fn restart(&self) {
        self.stop();
        for _ in 0..100 {
            if let Ok(l) = TcpListener::bind(self.addr).await {
                self.serve(l);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot rebind {}", self.addr);
    }

    /// A kubeconfig file (plain http, no credentials) pointing here.
    pub fn kubeconfig(&self) -> PathBuf {
        let p = self.dir.path().join("kubeconfig");
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
                 clusters: [{{name: k, cluster: {{server: \"http://{}\"}}}}]\n\
                 contexts: [{{name: c, context: {{cluster: k, user: u}}}}]\n\
                 users: [{{name: u, user: {{}}}}]\n",
                self.addr
            ),
        )
        .expect("write kubeconfig");
        p
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn change(&self, obj: Value, deleted: bool) {
        let Some(path) = path_of(&obj) else {
            panic!("unknown kind in {obj}");
        };
        let mut s = lock(&self.state);
        s.rv += 1;
        let rv = s.rv;
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        let key = key_of(&obj);
        let objs = s.objects.entry(path).or_default();
        let (kind, prev) = if deleted {
            ("DELETED", objs.remove(&key))
        } else {
            match objs.insert(key, obj.clone()) {
                Some(p) => ("MODIFIED", Some(p)),
                None => ("ADDED", None),
            }
        };
        let c = Change {
            rv,
            path,
            kind,
            obj,
            prev,
        };
        s.history.push(c.clone());
        let _ = self.tx.send(Msg::Change(c));
    }

    /// Creates or replaces an object (JSON with kind set, see `to_json`).
    pub fn apply(&self, obj: Value) {
        self.change(obj, false);
    }

    pub fn delete(&self, obj: Value) {
        self.change(obj, true);
    }

    /// Compacts history: open watches get ERROR 410 and close, and watches
    /// from any resourceVersion seen so far get 410 until they re-list.
    pub fn expire(&self) {
        let mut s = lock(&self.state);
        s.compacted = s.rv + 1;
        s.rv += 1;
        drop(s);
        let _ = self.tx.send(Msg::Expire);
    }

    /// Answers the next `n` lists of `path` with 410 Gone (as for an expired
    /// continue token or a compacted resourceVersion).
    pub fn fail_lists(&self, path: &'static str, n: usize) {
        lock(&self.state).failing_lists.insert(path, n);
    }

    /// Delays lists of `path` by `d`.
    pub fn slow(&self, path: &'static str, d: Duration) {
        lock(&self.state).slow.insert(path, d);
    }

    pub fn requests(&self) -> Vec<String> {
        lock(&self.state)
            .requests
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// When each list (not watch) of `path` arrived.
    pub fn list_times(&self, path: &str) -> Vec<Instant> {
        let prefix = format!("GET {path}");
        lock(&self.state)
            .requests
            .iter()
            .filter(|(_, r)| {
                (r.starts_with(&format!("{prefix}?")) || *r == prefix) && !r.contains("watch=")
            })
            .map(|(t, _)| *t)
            .collect()
    }

    /// The label selectors (decoded) of every list and watch of `path`.
    pub fn label_selectors(&self, path: &str) -> Vec<String> {
        lock(&self.state)
            .requests
            .iter()
            .filter(|(_, r)| {
                r.split_whitespace()
                    .nth(1)
                    .is_some_and(|t| t.split('?').next() == Some(path))
            })
            .filter_map(|(_, r)| query(r.split_whitespace().nth(1)?).remove("labelSelector"))
            .collect()
    }

    /// How many lists (not watches) of `path` were requested.
    pub fn lists(&self, path: &str) -> usize {
        self.list_times(path).len()
    }

    /// Events POSTed so far.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.state).events.clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Decodes %XX escapes (and `+` as a space), as in a query string.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(target: &str) -> BTreeMap<String, String> {
    let q = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

/// Whether `labels` satisfy a label selector: comma-separated `key`,
/// `!key`, `key=value`, `key==value` and `key!=value` requirements (what
/// kube-proxy's selectors use; set-based `in`/`notin` are not needed).
fn labels_match(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .all(|r| {
            let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
            if let Some(k) = r.strip_prefix('!') {
                get(k).is_none()
            } else if let Some((k, v)) = r.split_once("!=") {
                get(k) != Some(v.trim())
            } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                get(k) == Some(v.trim())
            } else {
                get(r).is_some()
            }
        })
}

/// The request's label and field selectors (`metadata.name=` only) applied to `obj`.
fn matches(q: &BTreeMap<String, String>, obj: &Value) -> bool {
    let name_ok = match q
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
    {
        Some(name) => obj["metadata"]["name"].as_str() == Some(name),
        None => true,
    };
    let labels_ok = q
        .get("labelSelector")
        .is_none_or(|sel| labels_match(sel, &obj["metadata"]["labels"]));
    name_ok && labels_ok
}

/// The event a watch with selectors sees for `ch`, as the API server does:
/// an object that starts matching is ADDED, one that stops is DELETED.
fn event_for(q: &BTreeMap<String, String>, ch: &Change) -> Option<Value> {
    let now = ch.kind != "DELETED" && matches(q, &ch.obj);
    let before = ch.prev.as_ref().is_some_and(|p| matches(q, p));
    let kind = match (before, now) {
        (false, false) => return None,
        (true, true) => ch.kind,
        (false, true) => "ADDED",
        (true, false) => "DELETED",
    };
    Some(json!({"type": kind, "object": ch.obj}))
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

async fn respond(c: &mut TcpStream, code: u16, body: &Value) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = c.write_all(head.as_bytes()).await;
    let _ = c.write_all(body.as_bytes()).await;
}

/// Reads one request: (method, target, body).
async fn read_request(c: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = c.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut words = head.lines().next()?.split_whitespace();
    let (method, target) = (words.next()?.to_string(), words.next()?.to_string());
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[end..].to_vec();
    while body.len() < len {
        let n = c.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((method, target, body))
}

async fn conn(mut c: TcpStream, state: Arc<Mutex<State>>, tx: broadcast::Sender<Msg>) {
    let epoch = lock(&state).epoch;
    let Some((method, target, body)) = read_request(&mut c).await else {
        return;
    };
    lock(&state)
        .requests
        .push((Instant::now(), format!("{method} {target}")));
    let path = target.split('?').next().unwrap_or_default().to_string();
    if method == "POST" && path.ends_with("/events") {
        let ev: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        lock(&state).events.push(ev.clone());
        respond(&mut c, 201, &ev).await;
        return;
    }
    let Some(&(kpath, list_kind, api_version)) = KINDS.iter().find(|k| k.0 == path) else {
        respond(&mut c, 404, &status(404, "NotFound")).await;
        return;
    };
    let q = query(&target);
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        watch(c, &state, &tx, kpath, &q, from, epoch).await;
        return;
    }
    let delay = lock(&state).slow.get(kpath).copied();
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let gone = {
        let mut s = lock(&state);
        // An exact read of a compacted resourceVersion is gone, as upstream.
        let too_old = q.get("resourceVersionMatch").is_some_and(|m| m == "Exact")
            && q.get("resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|rv| rv < s.compacted);
        let injected = match s.failing_lists.get_mut(kpath) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        too_old || injected
    };
    if gone {
        respond(&mut c, 410, &status(410, "Expired")).await;
        return;
    }
    let (rv, items): (u64, Vec<Value>) = {
        let s = lock(&state);
        let items = s
            .objects
            .get(kpath)
            .map(|m| m.values().filter(|o| matches(&q, o)).cloned().collect())
            .unwrap_or_default();
        (s.rv, items)
    };
    // Pages as the API server does with `limit`: the continue token here is
    // the offset of the next page (opaque to clients).
    let from: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let rest = items.len().saturating_sub(from);
    let page: Vec<Value> = items.into_iter().skip(from).take(limit).collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if rest > page.len() {
        metadata["continue"] = json!((from + page.len()).to_string());
    }
    let list = json!({"kind": list_kind, "apiVersion": api_version,
                      "metadata": metadata, "items": page});
    respond(&mut c, 200, &list).await;
}

async fn send_line(c: &mut TcpStream, v: &Value) -> bool {
    let mut line = v.to_string();
    line.push('\n');
    c.write_all(line.as_bytes()).await.is_ok()
}

async fn watch(
    mut c: TcpStream,
    state: &Mutex<State>,
    tx: &broadcast::Sender<Msg>,
    kpath: &str,
    q: &BTreeMap<String, String>,
    from: u64,
    epoch: u64,
) {
    // Subscribe before reading history so nothing falls in between.
    let mut rx = tx.subscribe();
    let (backlog, compacted) = {
        let s = lock(state);
        let b: Vec<Change> = s
            .history
            .iter()
            .filter(|ch| ch.rv > from && ch.path == kpath)
            .cloned()
            .collect();
        (b, s.compacted)
    };
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
    if c.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    if from < compacted {
        let _ = send_line(
            &mut c,
            &json!({"type": "ERROR", "object": status(410, "Expired")}),
        )
        .await;
        return;
    }
    let mut last = from;
    for ch in backlog {
        last = ch.rv;
        if let Some(ev) = event_for(q, &ch)
            && !send_line(&mut c, &ev).await
        {
            return;
        }
    }
    let bookmark_every = Duration::from_secs(1);
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            () = tokio::time::sleep(bookmark_every) => {
                let (kind, api_version) = KINDS.iter().find(|k| k.0 == kpath)
                    .map(|k| (k.1.trim_end_matches("List"), k.2)).unwrap_or_default();
                let rv = lock(state).rv.max(last);
                let bm = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": rv.to_string()}}});
                if q.get("allowWatchBookmarks").is_some_and(|b| b == "true") && !send_line(&mut c, &bm).await {
                    return;
                }
                continue;
            }
        };
        if lock(state).epoch != epoch {
            // Stopped: the connection is being torn down.
            return;
        }
        match msg {
            Ok(Msg::Change(ch)) if ch.path == kpath && ch.rv > last => {
                last = ch.rv;
                if let Some(ev) = event_for(q, &ch)
                    && !send_line(&mut c, &ev).await
                {
                    return;
                }
            }
            Ok(Msg::Change(_)) => {}
            Ok(Msg::Expire) | Err(broadcast::error::RecvError::Lagged(_)) => {
                let _ = send_line(
                    &mut c,
                    &json!({"type": "ERROR", "object": status(410, "Expired")}),
                )
                .await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
