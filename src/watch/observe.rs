//! What the watches meet on the wire: bookmarks (which kube's watcher consumes silently) counted by a client layer, and watch errors classified for the metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use kube::runtime::watcher;

use crate::metrics::Metrics;

/// How the API server frames a bookmark in a JSON watch stream: one compact
/// object per line, `{"type":"BOOKMARK","object":{...}}` (apimachinery's
/// watch encoder writes no spaces).
const BOOKMARK: &[u8] = br#""type":"BOOKMARK""#;

/// The resource label of a watch request: the last path segment of a
/// `?watch=true` GET, if it is one of the three kube-ipvs watches.
pub fn watched_resource(uri: &Uri) -> Option<&'static str> {
    let watching = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true"));
    if !watching {
        return None;
    }
    match uri.path().rsplit('/').next()? {
        "services" => Some("services"),
        "endpointslices" => Some("endpointslices"),
        "nodes" => Some("nodes"),
        _ => None,
    }
}

/// Why a watch failed, as the `reason` label of `kube_ipvs_watch_errors_total`.
/// `expired` is 410 Gone (the resource version was compacted or fell out of
/// the watch cache): the watcher re-lists. `forbidden` and `unauthorized`
/// mean RBAC or the token is wrong, and never heal by retrying; `connection`
/// is an error with no HTTP status (refused, reset, TLS, timeout).
pub fn error_reason(e: &watcher::Error) -> &'static str {
    let code = match e {
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match e {
            kube::Error::Api(status) => Some(status.code),
            _ => return "connection",
        },
        watcher::Error::NoResourceVersion => None,
    };
    match code {
        Some(410) => "expired",
        Some(403) => "forbidden",
        Some(401) => "unauthorized",
        Some(c) if c >= 500 => "server_error",
        _ => "other",
    }
}

/// Counts bookmarks in the watch responses passing through it.
#[derive(Clone)]
pub struct BookmarkLayer {
    metrics: Arc<Metrics>,
}

impl BookmarkLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        BookmarkLayer { metrics }
    }
}

impl<S> tower::Layer<S> for BookmarkLayer {
    type Service = BookmarkService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BookmarkService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct BookmarkService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for BookmarkService<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = Response<Counted<ResB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let counter = watched_resource(req.uri()).map(|r| (r, self.metrics.clone()));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|inner| Counted {
                inner,
                counter,
                scan: Scanner::default(),
            }))
        })
    }
}

/// A response body that counts the bookmarks it carries (watches only).
pub struct Counted<B> {
    inner: B,
    counter: Option<(&'static str, Arc<Metrics>)>,
    scan: Scanner,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some((resource, metrics))) = (&polled, &this.counter)
            && let Some(data) = frame.data_ref()
        {
            let n = this.scan.feed(data);
            if n > 0 {
                metrics.watch_bookmark(resource, n);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Finds `BOOKMARK` across frame boundaries: keeps the last bytes of each
/// frame that could start a match.
#[derive(Default)]
struct Scanner {
    carry: Vec<u8>,
}

impl Scanner {
    /// Bookmarks that end in `data`.
    fn feed(&mut self, data: &[u8]) -> u64 {
        let keep = BOOKMARK.len() - 1;
        // Matches straddling the boundary: the carry plus the head of `data`.
        let head = &data[..data.len().min(keep)];
        let mut joined = std::mem::take(&mut self.carry);
        let carried = joined.len();
        joined.extend_from_slice(head);
        let straddling = joined
            .windows(BOOKMARK.len())
            .enumerate()
            .filter(|(i, w)| *i < carried && *w == BOOKMARK)
            .count();
        let inside = data
            .windows(BOOKMARK.len())
            .filter(|w| *w == BOOKMARK)
            .count();
        // The new carry: the last `keep` bytes seen, across short frames too.
        joined.extend_from_slice(&data[head.len()..]);
        self.carry = joined[joined.len().saturating_sub(keep)..].to_vec();
        (straddling + inside) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"type":"BOOKMARK","object":{"kind":"Service","apiVersion":"v1","metadata":{"resourceVersion":"12345","annotations":{"k8s.io/initial-events-end":"true"}}}}"#;

    #[test]
    fn counts_bookmarks_split_anywhere() {
        let stream = format!(
            "{}\n{{\"type\":\"ADDED\",\"object\":{{}}}}\n{}\n",
            EVENT, EVENT
        );
        let bytes = stream.as_bytes();
        for cut in 0..bytes.len() {
            let mut s = Scanner::default();
            let n = s.feed(&bytes[..cut]) + s.feed(&bytes[cut..]);
            assert_eq!(n, 2, "split at {cut}");
        }
        // One byte per frame.
        let mut s = Scanner::default();
        assert_eq!(bytes.iter().map(|b| s.feed(&[*b])).sum::<u64>(), 2);
        // Nothing else counts.
        let mut s = Scanner::default();
        assert_eq!(
            s.feed(br#"{"type":"MODIFIED","object":{"type":"BOOKMAR"}}"#),
            0
        );
    }

    #[test]
    fn only_watches_of_our_resources_are_counted() {
        let u = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(
            watched_resource(&u(
                "https://a/api/v1/services?&watch=true&labelSelector=x&allowWatchBookmarks=true"
            )),
            Some("services")
        );
        assert_eq!(
            watched_resource(&u(
                "https://a/apis/discovery.k8s.io/v1/endpointslices?watch=true"
            )),
            Some("endpointslices")
        );
        assert_eq!(
            watched_resource(&u(
                "https://a/api/v1/nodes?fieldSelector=metadata.name%3Dn&watch=true"
            )),
            Some("nodes")
        );
        assert_eq!(
            watched_resource(&u("https://a/api/v1/services?limit=500")),
            None
        );
        assert_eq!(
            watched_resource(&u("https://a/api/v1/pods?watch=true")),
            None
        );
        assert_eq!(
            watched_resource(&u("https://a/api/v1/services?watch=false")),
            None
        );
    }

    #[test]
    fn error_reasons() {
        let status = |code| {
            Box::new(kube::core::Status {
                code,
                ..Default::default()
            })
        };
        assert_eq!(
            error_reason(&watcher::Error::WatchError(status(410))),
            "expired"
        );
        assert_eq!(
            error_reason(&watcher::Error::InitialListFailed(kube::Error::Api(
                status(403)
            ))),
            "forbidden"
        );
        assert_eq!(
            error_reason(&watcher::Error::WatchStartFailed(kube::Error::Api(status(
                401
            )))),
            "unauthorized"
        );
        assert_eq!(
            error_reason(&watcher::Error::WatchFailed(kube::Error::Api(status(503)))),
            "server_error"
        );
        assert_eq!(
            error_reason(&watcher::Error::WatchStartFailed(kube::Error::Service(
                Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
            ))),
            "connection"
        );
        assert_eq!(error_reason(&watcher::Error::NoResourceVersion), "other");
    }
}
