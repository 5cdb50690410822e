//! Tests of the manifests source: the cache, the feed, the watcher and the scanner thread.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::scanner::{learn, start_scanner};
use super::*;
use notify::EventKind;
use notify::event::{AccessKind, AccessMode};

use crate::changes::lock;
use crate::changes::{Hooks, ObjKey, Sources};
use crate::model::testutil;
use crate::model::testutil::cluster_ip_service as svc;
use crate::source::manifests::Manifests;
use crate::source::synthetic::Cluster;

fn svc_yaml(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
    )
}

fn key(name: &str) -> ObjKey {
    ObjKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

/// (name, ClusterIP or None for a deletion) of each service change, sorted.
fn service_ips(c: &Changes) -> Vec<(String, Option<String>)> {
    let mut v: Vec<_> = c
        .services
        .iter()
        .map(|(k, s)| {
            let ip = s.as_ref().map(|s| {
                s.spec
                    .as_ref()
                    .and_then(|sp| sp.cluster_ip.clone())
                    .unwrap_or_default()
            });
            (k.name.clone(), ip)
        })
        .collect();
    v.sort();
    v
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_file_name(".tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn manifests_feed_is_a_full_relist() {
    let mut node = testutil::node_obj();
    let name = node.metadata.name.clone().unwrap();
    let s = Mutex::new(Sources::new(Default::default(), &name));
    let h = Hooks::for_tests();
    let mut other = node.clone();
    other.metadata.name = Some("someone-else".into());
    let m = Manifests {
        services: vec![svc("a", "10.0.0.1"), svc("b", "10.0.0.2")],
        nodes: vec![other, node.clone()],
        ..Default::default()
    };
    feed_manifests(&s, &h, &name, m);
    assert!(
        h.trigger.is_pending(),
        "every source listed: first sync queued"
    );
    let b = lock(&s).take_batch().expect("ready after one load");
    assert_eq!(b.services.len(), 2);
    assert_eq!(
        b.node.as_ref().and_then(|n| n.metadata.name.clone()),
        Some(name.clone()),
        "only this node's Node object"
    );

    // Reload without b, same a: only b's deletion is pending.
    let h2 = Hooks::for_tests();
    let m = Manifests {
        services: vec![svc("a", "10.0.0.1")],
        nodes: vec![node.clone()],
        ..Default::default()
    };
    feed_manifests(&s, &h2, &name, m);
    assert!(h2.trigger.is_pending());
    let b = lock(&s).take_batch().unwrap();
    assert_eq!(b.services.len(), 1);
    assert_eq!(b.services[0].0.name, "b");
    assert!(b.services[0].1.current.is_none());
    assert!(b.node.is_none(), "unchanged node");

    // An identical reload queues nothing.
    let h3 = Hooks::for_tests();
    let m = Manifests {
        services: vec![svc("a", "10.0.0.1")],
        nodes: vec![node.clone()],
        ..Default::default()
    };
    feed_manifests(&s, &h3, &name, m);
    assert!(!h3.trigger.is_pending());
    assert!(lock(&s).take_batch().unwrap().is_empty());

    // A node being deleted makes /healthz report it ineligible.
    node.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    feed_manifests(
        &s,
        &h3,
        &name,
        Manifests {
            services: vec![svc("a", "10.0.0.1")],
            nodes: vec![node],
            ..Default::default()
        },
    );
    assert!(!h3.health.status().node_eligible);
}

#[test]
fn changes_feed_only_what_they_carry() {
    let node = testutil::node_obj();
    let name = node.metadata.name.clone().unwrap();
    let s = Mutex::new(Sources::new(Default::default(), &name));
    let m = Manifests {
        services: vec![svc("a", "10.0.0.1"), svc("b", "10.0.0.2")],
        nodes: vec![node],
        ..Default::default()
    };
    feed_manifests(&s, &Hooks::for_tests(), &name, m);
    lock(&s).take_batch().unwrap();

    let h = Hooks::for_tests();
    let c = Changes {
        services: vec![(key("a"), Some(svc("a", "10.0.0.9"))), (key("b"), None)],
        nodes: vec![(
            ObjKey {
                namespace: String::new(),
                name: "someone-else".into(),
            },
            None,
        )],
        ..Default::default()
    };
    feed_changes(&s, &h, &name, c);
    assert!(h.trigger.is_pending());
    let mut b = lock(&s).take_batch().unwrap();
    b.services.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(b.services.len(), 2);
    assert!(b.services[0].1.current.is_some() && b.services[1].1.current.is_none());
    assert!(b.node.is_none(), "another node's deletion is not ours");

    // Feeding an object as it already is queues nothing.
    let h = Hooks::for_tests();
    feed_changes(
        &s,
        &h,
        &name,
        Changes {
            services: vec![(key("a"), Some(svc("a", "10.0.0.9")))],
            ..Default::default()
        },
    );
    assert!(!h.trigger.is_pending());
}

#[test]
fn a_change_rereads_only_its_file_and_yields_only_its_objects() {
    let d = tempfile::tempdir().unwrap();
    // Enough files to be parsed in parallel.
    let c = Cluster::new(100, 3, "n").unwrap();
    c.write(d.path()).unwrap();
    let (mut f, m) = ManifestFiles::load(d.path()).unwrap();
    assert_eq!(
        (m.services.len(), m.slices.len(), m.nodes.len()),
        (100, 100, 1)
    );
    assert_eq!(f.len(), 101);
    // In file order, as a sequential load gives them.
    let names: Vec<_> = m
        .services
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    assert!(f.rescan().is_empty(), "nothing changed");

    let eps = c.replace_endpoint(7, 1, 9).unwrap();
    let path = c.write_service(d.path(), 7, &eps).unwrap();
    // What inotify reports (the rename's target) and what the poll finds agree.
    let mut by_event = f.refresh(&BTreeSet::from([path]));
    assert_eq!(by_event.reloaded, 1);
    assert_eq!(by_event.slices.len(), 1);
    let (k, slice) = by_event.slices.pop().unwrap();
    assert_eq!(k.name, "svc-00007-1");
    let addrs: Vec<String> = slice
        .unwrap()
        .endpoints
        .into_iter()
        .flat_map(|e| e.addresses)
        .collect();
    assert!(
        addrs.contains(&Cluster::endpoint_ip(7, 9).to_string()),
        "{addrs:?}"
    );
    assert!(
        f.rescan().is_empty(),
        "the event already took the new stamp"
    );

    c.write_service(d.path(), 3, &eps).unwrap();
    let by_poll = f.rescan();
    assert_eq!((by_poll.reloaded, by_poll.slices.len()), (1, 1));
    assert_eq!(
        by_poll.services.len(),
        1,
        "the file's Service is re-fed as it is"
    );
}

/// A directory of `n` generated services, loaded into a cache.
fn cached(n: usize) -> (tempfile::TempDir, Cluster, ManifestFiles) {
    let d = tempfile::tempdir().unwrap();
    let c = Cluster::new(n, 1, "n").unwrap();
    c.write(d.path()).unwrap();
    let (f, _) = ManifestFiles::load(d.path()).unwrap();
    (d, c, f)
}

#[test]
fn a_scan_older_than_the_cache_loses_nothing() {
    let (d, c, mut f) = cached(8);
    // The scanner thread starts from the cache's stamps, lists and stamps...
    let mut known = f.stamps();
    let before = f.len();
    assert_eq!(known.len(), before);
    let scanned = scan(d.path(), true).unwrap();
    assert!(
        stale(d.path(), Ok(scanned.clone()), &known)
            .unwrap()
            .is_empty()
    );
    // ...while the watcher serves a change and a new file.
    let eps = c.replace_endpoint(5, 0, 1).unwrap();
    let changed = c.write_service(d.path(), 5, &eps).unwrap();
    let added = c
        .write_service(d.path(), 8, &c.initial_endpoints(8))
        .unwrap();
    let served = f.refresh(&BTreeSet::from([changed.clone(), added.clone()]));
    assert_eq!((served.reloaded, served.services.len()), (2, 2));
    // The scanner learns the new stamps, then judges its stale listing.
    let learnt = f.take_stamp_changes();
    assert_eq!(learnt.len(), 2);
    learn(&mut known, learnt);
    assert_eq!(known, f.stamps());
    let found = stale(d.path(), Ok(scanned), &known).unwrap();
    assert_eq!(found, BTreeSet::from([changed, added.clone()]));
    // Re-reading them keeps the file the listing missed.
    let late = f.refresh(&found);
    assert!(late.errors.is_empty() && late.removed == 0, "{late:?}");
    assert!(late.services.iter().all(|(_, s)| s.is_some()), "{late:?}");
    assert!(f.files.contains_key(&added));
    let fresh = scan(d.path(), true);
    assert!(stale(d.path(), fresh, &f.stamps()).unwrap().is_empty());
    assert!(f.rescan().is_empty(), "nothing left to do");
    // A listing that failed or found nothing keeps every object.
    assert!(stale(d.path(), Ok(Vec::new()), &known).is_err());
    let gone = d.path().join("gone");
    let e = stale(&gone, scan(&gone, true), &known).unwrap_err();
    assert!(e.starts_with("cannot read"), "{e}");
    assert_eq!(f.len(), before + 1);
}

#[test]
fn the_scanners_copy_keeps_failed_stamps_and_forgets_gone_files() {
    let (d, _, mut f) = cached(2);
    let mut known = f.stamps();
    // A file that is invalid keeps its stamp: retried once it changes.
    let bad = d.path().join("bad.yaml");
    std::fs::write(&bad, "kind: Service\nmetadata: [\n").unwrap();
    let r = f.refresh(&BTreeSet::from([bad.clone()]));
    assert_eq!(r.errors.len(), 1, "{r:?}");
    learn(&mut known, f.take_stamp_changes());
    assert!(known.contains_key(&bad));
    assert!(
        stale(d.path(), scan(d.path(), true), &known)
            .unwrap()
            .is_empty()
    );
    // The cache, looked at in place, agrees with the copy, failed file included.
    assert_eq!(
        KnownStamps::paths(&f).collect::<BTreeSet<_>>(),
        known.keys().collect()
    );
    for (p, st) in &known {
        assert_eq!(KnownStamps::stamp(&f, p), Some(*st), "{}", p.display());
    }
    assert_eq!(KnownStamps::stamp(&f, &d.path().join("none.yaml")), None);
    assert!(
        stale(d.path(), scan(d.path(), true), &f)
            .unwrap()
            .is_empty()
    );
    // Gone: forgotten.
    std::fs::remove_file(&bad).unwrap();
    f.refresh(&BTreeSet::from([bad.clone()]));
    learn(&mut known, f.take_stamp_changes());
    assert!(!known.contains_key(&bad));
    assert_eq!(known, f.stamps());
}

#[test]
fn the_scanner_thread_reports_only_stale_files() {
    let (d, c, mut f) = cached(20);
    let (tx, rx) = std::sync::mpsc::channel();
    let report = move |found| tx.send(found).is_ok();
    let learnt = start_scanner(&f, Duration::from_millis(50), report).unwrap();
    // The first scan result that satisfies `done`, within 20 s.
    let next_scan = |done: &dyn Fn(&BTreeSet<PathBuf>) -> bool| {
        let start = std::time::Instant::now();
        loop {
            assert!(start.elapsed() < Duration::from_secs(20), "no such scan");
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(Ok(found)) if done(&found) => return found,
                Ok(Ok(_)) => {}
                _ => panic!("no scan result"),
            }
        }
    };
    assert!(next_scan(&|_| true).is_empty(), "nothing changed yet");
    // A change inotify did not report: only a scan finds it.
    let eps = c.replace_endpoint(3, 0, 1).unwrap();
    let p = c.write_service(d.path(), 3, &eps).unwrap();
    let found = next_scan(&|found| !found.is_empty());
    assert_eq!(found, BTreeSet::from([p]));
    // The watcher reads it and passes its stamp on: later scans are clean.
    assert_eq!(f.refresh(&found).slices.len(), 1);
    learnt.send(f.take_stamp_changes()).unwrap();
    next_scan(&|found| found.is_empty());
    // Dropping the watcher's end stops the thread (its sender goes too).
    drop(learnt);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(_) => {}
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => break,
        }
    }
    panic!("the scanner did not stop");
}

#[test]
fn removed_files_and_objects_are_deleted() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.yaml");
    let b = d.path().join("b.yaml");
    std::fs::write(
        &a,
        svc_yaml("a1", "10.0.0.1") + "---\n" + &svc_yaml("a2", "10.0.0.2"),
    )
    .unwrap();
    std::fs::write(&b, svc_yaml("b", "10.0.0.3")).unwrap();
    std::fs::write(d.path().join("notes.txt"), "not a manifest").unwrap();
    let (mut f, _) = ManifestFiles::load(d.path()).unwrap();
    assert_eq!(f.len(), 2);

    write_atomically(&a, &svc_yaml("a1", "10.0.0.1"));
    let c = f.rescan();
    assert_eq!(
        service_ips(&c),
        [("a1".into(), Some("10.0.0.1".into())), ("a2".into(), None)]
    );

    std::fs::remove_file(&b).unwrap();
    let c = f.refresh(&BTreeSet::from([b.clone()]));
    assert_eq!(service_ips(&c), [("b".into(), None)]);
    assert_eq!(c.removed, 1);

    // Removing the last file is refused (a ConfigMap volume mid-swap, a mistake).
    std::fs::remove_file(&a).unwrap();
    let c = f.refresh(&BTreeSet::from([a.clone()]));
    assert!(
        c.is_empty() && c.errors[0].contains("no manifest files"),
        "{c:?}"
    );
    let c = f.rescan();
    assert!(c.is_empty() && c.errors.len() == 1, "{c:?}");
    assert_eq!(f.len(), 1, "a.yaml's objects are kept");
}

#[test]
fn the_last_file_by_name_wins_a_duplicate_key() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.yaml");
    let b = d.path().join("b.yaml");
    std::fs::write(&a, svc_yaml("dup", "10.0.0.1")).unwrap();
    std::fs::write(&b, svc_yaml("dup", "10.0.0.2")).unwrap();
    let (mut f, m) = ManifestFiles::load(d.path()).unwrap();
    assert_eq!(
        m.services.len(),
        2,
        "the full list carries both, in file order"
    );

    // a changes, but b still wins: b's object is the current one.
    write_atomically(&a, &svc_yaml("dup", "10.0.0.7"));
    assert_eq!(
        service_ips(&f.refresh(&BTreeSet::from([a.clone()]))),
        [("dup".into(), Some("10.0.0.2".into()))]
    );
    // b drops it: a's (unchanged, re-read) object takes over rather than a deletion.
    write_atomically(&b, &svc_yaml("other", "10.0.0.3"));
    assert_eq!(
        service_ips(&f.refresh(&BTreeSet::from([b.clone()]))),
        [
            ("dup".into(), Some("10.0.0.7".into())),
            ("other".into(), Some("10.0.0.3".into()))
        ]
    );
}

#[test]
fn an_invalid_file_keeps_its_objects_until_fixed() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.yaml");
    std::fs::write(&a, svc_yaml("a", "10.0.0.1")).unwrap();
    std::fs::write(d.path().join("z.yaml"), svc_yaml("z", "10.0.0.9")).unwrap();
    let (mut f, _) = ManifestFiles::load(d.path()).unwrap();

    write_atomically(&a, "kind: Service\nmetadata: [\n");
    let c = f.rescan();
    assert!(c.is_empty(), "{c:?}");
    assert!(c.errors[0].contains("a.yaml"), "{:?}", c.errors);
    assert!(f.rescan().errors.is_empty(), "not retried until it changes");

    // A new invalid file is reported once too.
    std::fs::write(d.path().join("b.yaml"), "kind: [\n").unwrap();
    assert_eq!(f.rescan().errors.len(), 1);
    assert!(f.rescan().errors.is_empty());

    write_atomically(&a, &svc_yaml("a", "10.0.0.2"));
    assert_eq!(
        service_ips(&f.rescan()),
        [("a".into(), Some("10.0.0.2".into()))]
    );
    // The initial load stays strict: bad input fails before anything runs.
    let e = ManifestFiles::load(d.path()).unwrap_err();
    assert!(e.to_string().contains("b.yaml"), "{e}");
}

#[test]
fn a_single_file_and_a_configmap_swap_are_followed() {
    let d = tempfile::tempdir().unwrap();
    // A ConfigMap volume: files are symlinks through `..data`, swapped atomically.
    let v1 = d.path().join("..v1");
    let v2 = d.path().join("..v2");
    std::fs::create_dir(&v1).unwrap();
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v1.join("svc.yaml"), svc_yaml("s", "10.0.0.1")).unwrap();
    std::fs::write(v2.join("svc.yaml"), svc_yaml("s", "10.0.0.2")).unwrap();
    std::os::unix::fs::symlink("..v1", d.path().join("..data")).unwrap();
    let file = d.path().join("svc.yaml");
    std::os::unix::fs::symlink("..data/svc.yaml", &file).unwrap();

    let (mut dir, _) = ManifestFiles::load(d.path()).unwrap();
    let (mut single, _) = ManifestFiles::load(&file).unwrap();
    assert_eq!((dir.len(), single.len()), (1, 1));
    assert!(!single.is_dir());

    std::os::unix::fs::symlink("..v2", d.path().join("..data_tmp")).unwrap();
    std::fs::rename(d.path().join("..data_tmp"), d.path().join("..data")).unwrap();
    let want = [("s".to_string(), Some("10.0.0.2".to_string()))];
    assert_eq!(service_ips(&dir.rescan()), want);
    assert_eq!(service_ips(&single.rescan()), want);

    // The swap's inotify event names `..data`: that asks for a re-scan.
    let ev = notify::Event::new(EventKind::Create(notify::event::CreateKind::Any))
        .add_path(d.path().join("..data"));
    let mut w = Wanted::default();
    w.add(single.root(), false, &ev);
    assert!(w.rescan);
}

#[test]
fn events_ask_for_the_files_they_name() {
    use notify::event::{CreateKind, ModifyKind, RenameMode};
    let root = Path::new("/m");
    let ev = |kind, p: &str| notify::Event::new(kind).add_path(PathBuf::from(p));
    let rename = EventKind::Modify(ModifyKind::Name(RenameMode::To));
    let mut w = Wanted::default();
    w.add(root, true, &ev(rename, "/m/a.yaml"));
    w.add(root, true, &ev(rename, "/m/.a.yaml.tmp"));
    w.add(
        root,
        true,
        &ev(EventKind::Create(CreateKind::File), "/m/notes.txt"),
    );
    w.add(
        root,
        true,
        &ev(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            "/m/b.yaml",
        ),
    );
    assert_eq!(
        w,
        Wanted {
            rescan: false,
            files: BTreeSet::from([PathBuf::from("/m/a.yaml")]),
        },
        "our own reads and temporary files ask for nothing"
    );
    w.add(
        root,
        true,
        &ev(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "/m/b.json",
        ),
    );
    assert!(w.files.contains(Path::new("/m/b.json")));
    assert!(!w.rescan);
    w.add(
        root,
        true,
        &ev(EventKind::Remove(notify::event::RemoveKind::Folder), "/m"),
    );
    assert!(w.rescan, "the directory itself changed");

    let mut w = Wanted::default();
    w.add(
        Path::new("/m/one.yaml"),
        false,
        &ev(rename, "/m/other.yaml"),
    );
    assert!(w.is_empty(), "a single file ignores its neighbours");
    w.add(Path::new("/m/one.yaml"), false, &ev(rename, "/m/one.yaml"));
    assert_eq!(w.files, BTreeSet::from([PathBuf::from("/m/one.yaml")]));
    let mut w = Wanted::default();
    w.add(
        root,
        true,
        &notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan),
    );
    assert!(w.rescan, "a queue overflow re-scans");
}

#[test]
fn directories_named_like_manifests_are_not_read() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.yaml"), svc_yaml("a", "10.0.0.1")).unwrap();
    std::fs::create_dir(d.path().join("dir.yaml")).unwrap();
    std::os::unix::fs::symlink("dir.yaml", d.path().join("link.yaml")).unwrap();
    let (mut f, m) = ManifestFiles::load(d.path()).unwrap();
    assert_eq!((f.len(), m.services.len()), (1, 1));
    let c = f.rescan();
    assert!(c.is_empty() && c.errors.is_empty(), "{c:?}");
    assert_eq!((c.reloaded, c.removed), (0, 0));
}

#[test]
fn the_first_load_is_fed_in_chunks_as_one_list() {
    let d = tempfile::tempdir().unwrap();
    let n = LOAD_CHUNK + 10;
    let c = Cluster::new(n, 1, "n").unwrap();
    c.write(d.path()).unwrap();
    let s = Mutex::new(Sources::new(Default::default(), "n"));
    let h = Hooks::for_tests();
    let mut chunks = Vec::new();
    let files = ManifestFiles::load_each(d.path(), |m| chunks.push(m.services.len())).unwrap();
    // The node's file sorts first and takes a place in the first chunk.
    assert_eq!(chunks, vec![LOAD_CHUNK - 1, 11], "services per chunk");
    assert_eq!(files.len(), n + 1, "every file cached (and the node's)");

    let (_, kept) = load_and_feed(d.path(), &s, &h, "n").unwrap();
    assert_eq!(kept.nodes.len(), 1, "this node's Node is handed back");
    assert!(kept.services.is_empty() && kept.slices.is_empty());
    assert!(h.trigger.is_pending());
    let b = lock(&s).take_batch().unwrap();
    assert_eq!((b.services.len(), b.slices.len()), (n, n));
    // Every event counts, as the API watch counts them.
    let text = h.metrics.encode();
    assert!(
        text.contains(&format!(
            "kubeproxy_sync_proxy_rules_service_changes_total {n}"
        )),
        "{text}"
    );

    // A bad file after the first chunk: an error naming it, and the
    // sources never become ready (no sync sees the partial list).
    std::fs::write(d.path().join("zzz-bad.yaml"), "kind: [").unwrap();
    let s = Mutex::new(Sources::new(Default::default(), "n"));
    let h = Hooks::for_tests();
    let e = load_and_feed(d.path(), &s, &h, "n").unwrap_err();
    assert!(e.to_string().contains("zzz-bad.yaml"), "{e}");
    assert!(lock(&s).take_batch().is_none());
    assert!(!h.trigger.is_pending());
}

#[tokio::test]
async fn the_watcher_feeds_a_change_without_waiting_for_the_poll() {
    let d = tempfile::tempdir().unwrap();
    let c = Cluster::new(50, 2, "n").unwrap();
    c.write(d.path()).unwrap();
    let sources = Arc::new(Mutex::new(Sources::new(Default::default(), "n")));
    let h = Hooks::for_tests();
    let (f, _) = load_and_feed(d.path(), &sources, &h, "n").unwrap();
    assert_eq!(lock(&sources).take_batch().unwrap().slices.len(), 50);

    // Fresh hooks: the first feed left its trigger pending.
    let h = Hooks::for_tests();
    let task = tokio::spawn(watch(f, sources.clone(), h.clone(), "n".into()));
    let new_ip = Cluster::endpoint_ip(42, 5).to_string();
    let eps = c.replace_endpoint(42, 0, 5).unwrap();
    // The watch is set up on its own thread: rewrite until it reports, well before a poll.
    let start = std::time::Instant::now();
    let batch = loop {
        assert!(
            start.elapsed() < POLL_WITH_INOTIFY / 2,
            "no change fed within {:?}",
            POLL_WITH_INOTIFY / 2
        );
        c.write_service(d.path(), 42, &eps).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if h.trigger.is_pending() {
            break lock(&sources).take_batch().unwrap();
        }
    };
    assert!(
        batch.services.is_empty(),
        "the unchanged Service is a no-op"
    );
    assert_eq!(batch.slices.len(), 1, "only the changed file's slice");
    let current = batch.slices[0].1.current.as_ref().unwrap();
    let input = current.input.as_ref().expect("a slice of a Service");
    assert!(input.endpoints.iter().any(|e| e.ip.to_string() == new_ip));
    task.abort();
}

#[tokio::test]
async fn the_watcher_follows_a_configmap_swap_at_once() {
    let d = tempfile::tempdir().unwrap();
    let version = |n: u32| {
        let v = d.path().join(format!("..v{n}"));
        std::fs::create_dir(&v).unwrap();
        std::fs::write(v.join("svc.yaml"), svc_yaml("s", &format!("10.0.0.{n}"))).unwrap();
    };
    version(1);
    std::os::unix::fs::symlink("..v1", d.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/svc.yaml", d.path().join("svc.yaml")).unwrap();
    let sources = Arc::new(Mutex::new(Sources::new(Default::default(), "n")));
    let (f, _) = load_and_feed(d.path(), &sources, &Hooks::for_tests(), "n").unwrap();
    assert_eq!(lock(&sources).take_batch().unwrap().services.len(), 1);

    let h = Hooks::for_tests();
    let task = tokio::spawn(watch(f, sources.clone(), h.clone(), "n".into()));
    // Swap `..data` until the watcher reports (its inotify watch starts
    // on its own thread); no event names svc.yaml, so this is the re-scan
    // the swap asks for, well before the periodic one. Every swap is to a
    // new version: swapping back could let the tracker coalesce a late
    // reload and its undo into no change at all.
    let start = std::time::Instant::now();
    let mut n = 1;
    let batch = loop {
        assert!(
            start.elapsed() < POLL_WITH_INOTIFY / 2,
            "the swap was not followed within {:?}",
            POLL_WITH_INOTIFY / 2
        );
        n += 1;
        version(n);
        let tmp = d.path().join("..data_tmp");
        std::os::unix::fs::symlink(format!("..v{n}"), &tmp).unwrap();
        std::fs::rename(&tmp, d.path().join("..data")).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if h.trigger.is_pending() {
            break lock(&sources).take_batch().unwrap();
        }
    };
    assert_eq!(batch.services.len(), 1, "the Service behind the swap");
    task.abort();
}

#[test]
fn directories_load_sorted_and_missing_paths_are_named() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("b.yaml"), svc_yaml("b", "10.96.0.11")).unwrap();
    std::fs::write(d.path().join("a.yml"), svc_yaml("a", "10.96.0.12")).unwrap();
    std::fs::write(d.path().join("notes.txt"), "kind: Service\n").unwrap();
    let m = load(d.path()).unwrap();
    let names: Vec<_> = m
        .services
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let e = load(&d.path().join("nope")).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        load(empty.path()),
        Err(crate::source::manifests::ManifestError::Empty { .. })
    ));
}
