//! A blocking IPVS client on one netlink socket, with batched `apply` for bulk changes.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

use netlink_sys::protocols::NETLINK_GENERIC;

use super::message::*;
use super::nla::CmdAttr;
use super::types::*;
use crate::error::{Error, NetlinkError, Result, errno};
use crate::netlink::{NetlinkSocket, NetlinkStats, Replies, SocketConfig};

/// One change to the IPVS table; many are sent per `sendmsg` by [`IpvsClient::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    AddService(Service),
    EditService(Service),
    DeleteService(ServiceKey),
    AddDestination(ServiceKey, Destination),
    EditDestination(ServiceKey, Destination),
    DeleteDestination(ServiceKey, SocketAddr),
}

impl Operation {
    /// The service this operation concerns.
    pub fn service_key(&self) -> &ServiceKey {
        match self {
            Operation::AddService(s) | Operation::EditService(s) => &s.key,
            Operation::DeleteService(k)
            | Operation::AddDestination(k, _)
            | Operation::EditDestination(k, _)
            | Operation::DeleteDestination(k, _) => k,
        }
    }

    fn message(&self) -> IpvsMessage {
        let svc = |k: &ServiceKey| CmdAttr::Service(service_key_attrs(k));
        match self {
            Operation::AddService(s) => IpvsMessage::new(
                IpvsCmd::NewService,
                vec![CmdAttr::Service(service_attrs(s))],
            ),
            Operation::EditService(s) => IpvsMessage::new(
                IpvsCmd::SetService,
                vec![CmdAttr::Service(service_attrs(s))],
            ),
            Operation::DeleteService(k) => IpvsMessage::new(IpvsCmd::DelService, vec![svc(k)]),
            Operation::AddDestination(k, d) => IpvsMessage::new(
                IpvsCmd::NewDest,
                vec![svc(k), CmdAttr::Dest(destination_attrs(d))],
            ),
            Operation::EditDestination(k, d) => IpvsMessage::new(
                IpvsCmd::SetDest,
                vec![svc(k), CmdAttr::Dest(destination_attrs(d))],
            ),
            Operation::DeleteDestination(k, a) => IpvsMessage::new(
                IpvsCmd::DelDest,
                vec![svc(k), CmdAttr::Dest(destination_key_attrs(*a))],
            ),
        }
    }

    /// Turns the kernel's errno into an error naming the service/destination.
    fn error(&self, e: NetlinkError) -> Error {
        use errno::*;
        let code = e.errno();
        match (self, code) {
            (Operation::AddService(s), Some(EEXIST)) => Error::ServiceExists(s.key),
            // ip_vs_add/edit_service: unknown scheduler (or persistence engine) is ENOENT.
            (Operation::AddService(s) | Operation::EditService(s), Some(ENOENT)) => {
                Error::SchedulerNotFound {
                    name: s.scheduler.name().to_owned(),
                }
            }
            // ip_vs_genl_set_cmd: every command but NEW_SERVICE needs an existing service.
            (op, Some(ESRCH)) if !matches!(op, Operation::AddService(_)) => {
                Error::ServiceNotFound(*op.service_key())
            }
            (Operation::AddDestination(k, d), Some(EEXIST)) => Error::DestinationExists {
                service: *k,
                dest: d.addr,
            },
            (Operation::EditDestination(k, d), Some(ENOENT)) => Error::DestinationNotFound {
                service: *k,
                dest: d.addr,
            },
            (Operation::DeleteDestination(k, a), Some(ENOENT)) => Error::DestinationNotFound {
                service: *k,
                dest: *a,
            },
            _ => Error::generic(self.to_string(), e),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::AddService(s) => write!(f, "add service {}", s.key),
            Operation::EditService(s) => write!(f, "edit service {}", s.key),
            Operation::DeleteService(k) => write!(f, "delete service {k}"),
            Operation::AddDestination(k, d) => {
                write!(f, "add destination {} to service {k}", d.addr)
            }
            Operation::EditDestination(k, d) => {
                write!(f, "edit destination {} of service {k}", d.addr)
            }
            Operation::DeleteDestination(k, a) => {
                write!(f, "delete destination {a} of service {k}")
            }
        }
    }
}

/// A blocking client of the kernel's IPVS over one generic netlink socket.
pub struct IpvsClient {
    sock: NetlinkSocket,
    family: u16,
    buf: Vec<u8>,
    replies: Replies,
}

impl IpvsClient {
    /// Opens a socket and resolves the "IPVS" family.
    pub fn new() -> Result<Self> {
        Self::with_config(SocketConfig::default())
    }

    pub fn with_config(config: SocketConfig) -> Result<Self> {
        let mut sock = NetlinkSocket::with_config(NETLINK_GENERIC, config)
            .map_err(|e| Error::generic("open netlink socket", e))?;
        let family = match sock.genl_family_id(IPVS_GENL_NAME) {
            Ok(id) => id,
            // nlctrl answers ENOENT for an unregistered family: ip_vs not loaded.
            Err(NetlinkError::Kernel {
                errno: errno::ENOENT,
                ..
            }) => return Err(Error::IpvsUnavailable),
            Err(e) => return Err(Error::generic("resolve generic netlink family IPVS", e)),
        };
        Ok(IpvsClient {
            sock,
            family,
            buf: Vec::with_capacity(64 << 10),
            replies: Replies::new(),
        })
    }

    /// The generic netlink family id the kernel gave IPVS.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// Message and syscall counters of the underlying socket.
    pub fn netlink_stats(&self) -> NetlinkStats {
        self.sock.stats()
    }

    /// Sends one request and parses its replies.
    fn request(&mut self, op: &str, msg: IpvsMessage) -> Result<Vec<IpvsMessage>> {
        self.buf.clear();
        msg.append_request(self.family, &mut self.buf);
        self.sock
            .request(&mut self.buf, &mut self.replies)
            .map_err(|e| Error::generic(op, e))?;
        self.parse_replies(op)
    }

    fn dump(&mut self, op: &str, msg: IpvsMessage) -> Result<Vec<IpvsMessage>> {
        self.buf.clear();
        msg.append_request(self.family, &mut self.buf);
        self.sock
            .dump(&mut self.buf, &mut self.replies)
            .map_err(|e| Error::generic(op, e))?;
        self.parse_replies(op)
    }

    fn parse_replies(&self, op: &str) -> Result<Vec<IpvsMessage>> {
        self.replies
            .iter()
            .enumerate()
            .map(|(i, r)| {
                IpvsMessage::parse(r.payload)
                    .map_err(|e| Error::decode(format!("reply {i} to {op}"), e))
            })
            .collect()
    }

    /// IPVS version and connection table size.
    pub fn info(&mut self) -> Result<Info> {
        let replies = self.request("get info", IpvsMessage::new(IpvsCmd::GetInfo, vec![]))?;
        let first = replies
            .first()
            .ok_or_else(|| Error::decode("reply to get info", "no SET_INFO message"))?;
        info_from_attrs(&first.attrs).map_err(|e| Error::decode("GET_INFO reply", e))
    }

    /// TCP, TCP FIN and UDP connection timeouts.
    pub fn timeouts(&mut self) -> Result<Timeouts> {
        let replies = self.request("get timeouts", IpvsMessage::new(IpvsCmd::GetConfig, vec![]))?;
        let first = replies
            .first()
            .ok_or_else(|| Error::decode("reply to get timeouts", "no SET_CONFIG message"))?;
        Ok(timeouts_from_attrs(&first.attrs))
    }

    /// Sets the timeouts; a zero field leaves that timeout unchanged.
    pub fn set_timeouts(&mut self, t: Timeouts) -> Result<()> {
        self.request(
            "set timeouts",
            IpvsMessage::new(IpvsCmd::SetConfig, timeouts_attrs(&t)),
        )?;
        Ok(())
    }

    /// Every virtual service (one dump).
    ///
    /// The kernel's service dump resumes by position in hash tables shared by
    /// all network namespaces and never flags NLM_F_DUMP_INTR, so concurrent
    /// changes (even in another namespace) can repeat or skip entries; repeats
    /// are dropped here. Seen in the lab: one service reported 4 times.
    pub fn services(&mut self) -> Result<Vec<ServiceEntry>> {
        let replies = self.dump(
            "dump services",
            IpvsMessage::new(IpvsCmd::GetService, vec![]),
        )?;
        let mut seen = HashSet::with_capacity(replies.len());
        let mut out = Vec::with_capacity(replies.len());
        for (i, m) in replies.iter().enumerate() {
            let attrs = m.service().ok_or_else(|| {
                Error::decode(format!("service dump message {i}"), "no SERVICE nest")
            })?;
            let entry = service_from_attrs(attrs)
                .map_err(|e| Error::decode(format!("service dump message {i}"), e))?;
            if seen.insert(entry.service.key) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// One service, or `None` if the kernel does not have it.
    pub fn service(&mut self, key: &ServiceKey) -> Result<Option<ServiceEntry>> {
        let msg = IpvsMessage::new(
            IpvsCmd::GetService,
            vec![CmdAttr::Service(service_key_attrs(key))],
        );
        let op = format!("get service {key}");
        let replies = match self.request(&op, msg) {
            Ok(r) => r,
            Err(e) if e.errno() == Some(errno::ESRCH) => return Ok(None),
            Err(e) => return Err(e),
        };
        match replies.first().and_then(|m| m.service()) {
            Some(attrs) => service_from_attrs(attrs)
                .map(Some)
                .map_err(|e| Error::decode(format!("reply to {op}"), e)),
            None => Ok(None),
        }
    }

    /// The real servers of a service (empty if the service does not exist:
    /// the kernel's dest dump ends silently then).
    pub fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationEntry>> {
        let msg = IpvsMessage::new(
            IpvsCmd::GetDest,
            vec![CmdAttr::Service(service_key_attrs(key))],
        );
        let op = format!("dump destinations of service {key}");
        let replies = self.dump(&op, msg)?;
        let family = key.family();
        replies
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let attrs = m
                    .dest()
                    .ok_or_else(|| Error::decode(format!("{op}, message {i}"), "no DEST nest"))?;
                destination_from_attrs(attrs, family)
                    .map_err(|e| Error::decode(format!("{op}, message {i}"), e))
            })
            .collect()
    }

    /// Every service with its real servers: one service dump plus one
    /// destination dump per service (the kernel has no "all destinations" dump).
    pub fn table(&mut self) -> Result<Vec<(ServiceEntry, Vec<DestinationEntry>)>> {
        let mut out = Vec::new();
        self.table_each(|s, dests| out.push((s, dests)))?;
        Ok(out)
    }

    /// `table`, handing each service with its destinations to `each` as it
    /// is read, so a large table is never held whole.
    pub fn table_each(
        &mut self,
        mut each: impl FnMut(ServiceEntry, Vec<DestinationEntry>),
    ) -> Result<()> {
        for s in self.services()? {
            let dests = self.destinations(&s.service.key)?;
            each(s, dests);
        }
        Ok(())
    }

    fn apply_one(&mut self, op: Operation) -> Result<()> {
        let mut r = self.apply(std::slice::from_ref(&op));
        r.pop().unwrap_or(Ok(()))
    }

    pub fn add_service(&mut self, svc: &Service) -> Result<()> {
        self.apply_one(Operation::AddService(svc.clone()))
    }

    pub fn edit_service(&mut self, svc: &Service) -> Result<()> {
        self.apply_one(Operation::EditService(svc.clone()))
    }

    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<()> {
        self.apply_one(Operation::DeleteService(*key))
    }

    pub fn add_destination(&mut self, key: &ServiceKey, d: &Destination) -> Result<()> {
        self.apply_one(Operation::AddDestination(*key, *d))
    }

    pub fn edit_destination(&mut self, key: &ServiceKey, d: &Destination) -> Result<()> {
        self.apply_one(Operation::EditDestination(*key, *d))
    }

    pub fn delete_destination(&mut self, key: &ServiceKey, addr: SocketAddr) -> Result<()> {
        self.apply_one(Operation::DeleteDestination(*key, addr))
    }

    /// Zeroes the counters of one service, or of all with `None`.
    pub fn zero(&mut self, key: Option<&ServiceKey>) -> Result<()> {
        let attrs = key
            .map(|k| vec![CmdAttr::Service(service_key_attrs(k))])
            .unwrap_or_default();
        let op = match key {
            Some(k) => format!("zero service {k}"),
            None => "zero all counters".to_owned(),
        };
        match self.request(&op, IpvsMessage::new(IpvsCmd::Zero, attrs)) {
            Ok(_) => Ok(()),
            Err(e) if e.errno() == Some(errno::ESRCH) => match key {
                Some(k) => Err(Error::ServiceNotFound(*k)),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Deletes every service and destination.
    pub fn flush(&mut self) -> Result<()> {
        self.request("flush", IpvsMessage::new(IpvsCmd::Flush, vec![]))?;
        Ok(())
    }

    /// Applies many operations, packed many per `sendmsg`, and returns one
    /// result per operation, in order.
    ///
    /// Not a transaction: the kernel applies messages one by one and goes on
    /// after a failure, so a failed operation does not stop later ones. An
    /// operation is reported `Ok` only when its ACK arrived; an
    /// [`Error::Unconfirmed`] result means its ACK was lost (ENOBUFS) or did
    /// not come in time, and the caller must re-read kernel state.
    pub fn apply(&mut self, ops: &[Operation]) -> Vec<Result<()>> {
        self.buf.clear();
        for op in ops {
            op.message().append_request(self.family, &mut self.buf);
        }
        match self.sock.batch(&mut self.buf) {
            Ok(results) => results
                .into_iter()
                .zip(ops)
                .map(|(r, op)| r.map_err(|e| op.error(e)))
                .collect(),
            // Only if we built a malformed message: nothing was sent.
            Err(e) => {
                let text = e.to_string();
                ops.iter()
                    .map(|op| {
                        Err(Error::generic(
                            op.to_string(),
                            NetlinkError::InvalidRequest(text.clone()),
                        ))
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ipvs_family_is_reported_as_unavailable() {
        // Only meaningful where ip_vs is not loaded (e.g. a build sandbox).
        if std::path::Path::new("/proc/net/ip_vs").exists()
            || NetlinkSocket::new(NETLINK_GENERIC).is_err()
        {
            return;
        }
        match IpvsClient::new() {
            Err(e @ Error::IpvsUnavailable) => assert_eq!(
                e.to_string(),
                "IPVS is not available: load it with scripts/load-modules.sh"
            ),
            Err(e) => panic!("{e:?}"),
            Ok(_) => {} // autoloaded by the kernel after all
        }
    }

    #[test]
    fn errors_name_the_object() {
        let k = ServiceKey::Tcp("10.0.0.1:80".parse().unwrap());
        let kernel = |errno| NetlinkError::Kernel {
            errno,
            message: None,
        };
        let add = Operation::AddService(Service::new(k));
        assert_eq!(
            add.error(kernel(errno::EEXIST)).to_string(),
            "service TCP 10.0.0.1:80 already exists"
        );
        let mut foo = Service::new(k);
        foo.scheduler = Scheduler::Other("foo".into());
        assert_eq!(
            Operation::AddService(foo)
                .error(kernel(errno::ENOENT))
                .to_string(),
            "scheduler 'foo' not found: load ip_vs_foo"
        );
        assert_eq!(
            Operation::DeleteService(k)
                .error(kernel(errno::ESRCH))
                .to_string(),
            "service TCP 10.0.0.1:80 does not exist"
        );
        let d: SocketAddr = "10.1.0.1:8080".parse().unwrap();
        assert_eq!(
            Operation::DeleteDestination(k, d)
                .error(kernel(errno::ENOENT))
                .to_string(),
            "destination 10.1.0.1:8080 of service TCP 10.0.0.1:80 does not exist"
        );
        let e = Operation::AddDestination(k, Destination::masq(d)).error(kernel(errno::EINVAL));
        assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("add destination 10.1.0.1:8080 to service TCP 10.0.0.1:80")
        );
        let e = add.error(NetlinkError::Unconfirmed { seq: 3 });
        assert!(e.is_unconfirmed());
    }
}
