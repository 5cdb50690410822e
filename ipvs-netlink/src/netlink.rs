//! A blocking, family-agnostic netlink socket: batched requests with per-message ACKs, dumps.
//!
//! Callers hand over complete, serialized netlink messages (each starting with
//! its `nlmsghdr`); this layer owns sequence numbers, request/ACK flags,
//! packing into `sendmsg` calls and matching replies. Families (generic
//! netlink/IPVS, nfnetlink/ipset, rtnetlink) build on top of it.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use netlink_packet_core::NlasIterator;
use netlink_sys::{Socket, SocketAddr};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::error::NetlinkError;

/// Netlink protocol numbers (`NETLINK_GENERIC`, `NETLINK_NETFILTER`, `NETLINK_ROUTE`, ...).
pub use netlink_sys::protocols;

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
/// On an NLMSG_ERROR: the echoed request was cut to its header (NETLINK_CAP_ACK).
pub const NLM_F_CAPPED: u16 = 0x100;
/// On an NLMSG_ERROR: extended-ACK TLVs follow the echoed request.
pub const NLM_F_ACK_TLVS: u16 = 0x200;

const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_MISS_TYPE: u16 = 5;

const ENOBUFS: i32 = 105;
const EINTR: i32 = 4;

/// How many times a dump is restarted when the kernel flags it inconsistent.
pub const DUMP_RETRIES: u32 = 5;

/// Rounds up to the netlink alignment of 4 bytes.
pub const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Which messages of a batch ask the kernel for an ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// NLM_F_ACK on every message: one ACK (and one recvmsg) per message.
    EveryMessage,
    /// NLM_F_ACK only on the last message of each sendmsg. The kernel still
    /// answers every failure, and handles a sendmsg's messages in order, so
    /// the last ACK vouches for every earlier message without an error. If
    /// the queue overflowed (ENOBUFS) nothing unacknowledged counts as applied.
    /// The default: a batch of 110,000 operations costs ~60 recvmsg, not 110,000.
    #[default]
    ErrorsAndLast,
}

/// Socket tuning; the defaults suit batches of thousands of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketConfig {
    /// SO_RCVTIMEO: a stuck socket must never hang the caller (kubernetes #71071).
    pub recv_timeout: Duration,
    /// Requested SO_SNDBUF (forced when root). The kernel rejects a sendmsg
    /// larger than the send buffer with EMSGSIZE.
    pub send_buffer: usize,
    /// Requested SO_RCVBUF (forced when root): room for the ACK storm of a batch.
    pub recv_buffer: usize,
    /// Upper bound on the bytes packed into one sendmsg.
    pub max_batch_bytes: usize,
    pub ack_mode: AckMode,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            recv_timeout: Duration::from_secs(5),
            send_buffer: 1 << 20,
            recv_buffer: 8 << 20,
            max_batch_bytes: 256 << 10,
            ack_mode: AckMode::ErrorsAndLast,
        }
    }
}

/// Syscall and message counters, for benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetlinkStats {
    pub messages_sent: u64,
    pub sendmsg_calls: u64,
    pub recvmsg_calls: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// The fields of an `nlmsghdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgHeader {
    pub len: u32,
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
}

impl MsgHeader {
    /// Reads a header at the start of `buf`, checking that the message fits.
    pub fn parse(buf: &[u8]) -> Result<Self, NetlinkError> {
        if buf.len() < NLMSG_HDRLEN {
            return Err(NetlinkError::Decode(format!(
                "netlink header needs {NLMSG_HDRLEN} bytes, got {}",
                buf.len()
            )));
        }
        let h = MsgHeader {
            len: u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]),
            msg_type: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            pid: u32::from_ne_bytes([buf[12], buf[13], buf[14], buf[15]]),
        };
        let len = h.len as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(NetlinkError::Decode(format!(
                "netlink message length {len} outside 16..={}",
                buf.len()
            )));
        }
        Ok(h)
    }

    /// Writes the header into the first 16 bytes of `buf` (which must hold them).
    pub fn emit(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&self.len.to_ne_bytes());
        buf[4..6].copy_from_slice(&self.msg_type.to_ne_bytes());
        buf[6..8].copy_from_slice(&self.flags.to_ne_bytes());
        buf[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        buf[12..16].copy_from_slice(&self.pid.to_ne_bytes());
    }
}

/// Iterates over the messages packed in one datagram (or one caller buffer).
pub struct Messages<'a> {
    buf: &'a [u8],
}

impl<'a> Messages<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Messages { buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    /// The header and the payload after it.
    type Item = Result<(MsgHeader, &'a [u8]), NetlinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        match MsgHeader::parse(self.buf) {
            Ok(h) => {
                let len = h.len as usize;
                let payload = &self.buf[NLMSG_HDRLEN..len];
                self.buf = &self.buf[align(len).min(self.buf.len())..];
                Some(Ok((h, payload)))
            }
            Err(e) => {
                self.buf = &[];
                Some(Err(e))
            }
        }
    }
}

/// Reply payloads of one request or dump, stored back to back in one buffer.
#[derive(Debug, Default, Clone)]
pub struct Replies {
    data: Vec<u8>,
    spans: Vec<(u16, u16, usize, usize)>,
}

/// One reply message: its type, flags and payload (the bytes after `nlmsghdr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub payload: &'a [u8],
}

impl Replies {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.spans.clear();
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn push(&mut self, msg_type: u16, flags: u16, payload: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.spans.push((msg_type, flags, start, self.data.len()));
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Reply<'_>> + '_ {
        self.spans.iter().map(|&(msg_type, flags, s, e)| Reply {
            msg_type,
            flags,
            payload: &self.data[s..e],
        })
    }
}

/// Outcome of one message of a batch.
pub type AckResult = Result<(), NetlinkError>;

/// A connected, blocking netlink socket of one protocol.
pub struct NetlinkSocket {
    sock: Socket,
    seq: u32,
    rbuf: Vec<u8>,
    recv_timeout: Duration,
    batch_bytes: usize,
    batch_messages: usize,
    ack_mode: AckMode,
    stats: NetlinkStats,
    /// Generic netlink family ids by name (see `genl`).
    pub(crate) genl_families: HashMap<String, u16>,
}

impl NetlinkSocket {
    /// Opens a socket of `protocol` (e.g. `netlink_sys::protocols::NETLINK_GENERIC`).
    pub fn new(protocol: isize) -> Result<Self, NetlinkError> {
        Self::with_config(protocol, SocketConfig::default())
    }

    pub fn with_config(protocol: isize, config: SocketConfig) -> Result<Self, NetlinkError> {
        let mut sock = Socket::new(protocol).map_err(|e| NetlinkError::io("socket", e))?;
        sock.bind_auto().map_err(|e| NetlinkError::io("bind", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| NetlinkError::io("connect", e))?;
        // Error text from the kernel, and errors without the echoed request
        // (keeps error ACKs small in an ACK storm). Both are best effort (old kernels).
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);

        // SO_*BUFFORCE passes rmem_max/wmem_max but needs CAP_NET_ADMIN; fall back silently.
        if setsockopt(&sock, sockopt::SndBufForce, &config.send_buffer).is_err() {
            let _ = setsockopt(&sock, sockopt::SndBuf, &config.send_buffer);
        }
        if setsockopt(&sock, sockopt::RcvBufForce, &config.recv_buffer).is_err() {
            let _ = setsockopt(&sock, sockopt::RcvBuf, &config.recv_buffer);
        }
        // getsockopt reports the doubled value the kernel accounts against.
        let sndbuf = getsockopt(&sock, sockopt::SndBuf).unwrap_or(212_992);
        let rcvbuf = getsockopt(&sock, sockopt::RcvBuf).unwrap_or(212_992);
        let tv = TimeVal::new(
            config.recv_timeout.as_secs() as _,
            config.recv_timeout.subsec_micros() as _,
        );
        setsockopt(&sock, sockopt::ReceiveTimeout, &tv)
            .map_err(|e| NetlinkError::io("setsockopt(SO_RCVTIMEO)", e.into()))?;

        // netlink_sendmsg refuses len > sk_sndbuf - 32; keep well under it.
        let batch_bytes = (sndbuf / 2).min(config.max_batch_bytes).max(4096);
        // Each ACK skb costs roughly 1 KiB of receive buffer (truesize); a full
        // queue drops ACKs (ENOBUFS), so cap messages per sendmsg to fit half of it.
        let batch_messages = (rcvbuf / 2048).max(16);
        Ok(NetlinkSocket {
            sock,
            seq: 0,
            // Dump skbs are at most 32 KiB (netlink_dump); 64 KiB leaves room.
            rbuf: vec![0; 64 << 10],
            recv_timeout: config.recv_timeout,
            batch_bytes,
            batch_messages,
            ack_mode: config.ack_mode,
            stats: NetlinkStats::default(),
            genl_families: HashMap::new(),
        })
    }

    pub fn stats(&self) -> NetlinkStats {
        self.stats
    }

    /// Bytes and messages packed into one sendmsg at most.
    pub fn batch_limits(&self) -> (usize, usize) {
        (self.batch_bytes, self.batch_messages)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&mut self, buf: &[u8], messages: usize) -> Result<(), NetlinkError> {
        self.stats.sendmsg_calls += 1;
        match self.sock.send(buf, 0) {
            Ok(_) => {
                self.stats.messages_sent += messages as u64;
                self.stats.bytes_sent += buf.len() as u64;
                Ok(())
            }
            Err(e) => Err(NetlinkError::io("sendmsg", e)),
        }
    }

    /// Receives one datagram into the reused buffer; returns its length.
    ///
    /// `Ok(None)` means the queue overflowed (ENOBUFS) and replies were dropped.
    fn recv(&mut self, dontwait: bool) -> Result<Option<usize>, NetlinkError> {
        let mut flags = nix::libc::MSG_TRUNC;
        if dontwait {
            flags |= nix::libc::MSG_DONTWAIT;
        }
        loop {
            self.stats.recvmsg_calls += 1;
            let mut slice: &mut [u8] = &mut self.rbuf[..];
            match self.sock.recv(&mut slice, flags) {
                Ok(n) if n > self.rbuf.len() => {
                    return Err(NetlinkError::Decode(format!(
                        "reply of {n} bytes truncated to the {}-byte receive buffer",
                        self.rbuf.len()
                    )));
                }
                Ok(n) => {
                    self.stats.bytes_received += n as u64;
                    return Ok(Some(n));
                }
                Err(e) => match e.raw_os_error() {
                    Some(EINTR) => continue,
                    Some(ENOBUFS) => return Ok(None),
                    _ if e.kind() == io::ErrorKind::WouldBlock => {
                        return Err(NetlinkError::Timeout(self.recv_timeout));
                    }
                    _ => return Err(NetlinkError::io("recvmsg", e)),
                },
            }
        }
    }

    /// Sends every message in `msgs` (complete netlink messages back to back,
    /// each 4-byte aligned) and returns one result per message, in order.
    ///
    /// Many messages go in one sendmsg (up to the byte budget derived from the
    /// send buffer); each gets its own sequence number and NLM_F_ACK. The kernel
    /// processes the messages of a sendmsg one after another and keeps going
    /// after a failure: this is NOT a transaction, some may apply and others fail.
    /// A result is `Ok` only when its ACK arrived. If ACKs are dropped (ENOBUFS)
    /// or the kernel stops answering, the affected results are
    /// [`NetlinkError::Unconfirmed`] / [`NetlinkError::Timeout`]: re-read state.
    /// With [`AckMode::ErrorsAndLast`] only each sendmsg's last message asks
    /// for an ACK (see there): far fewer recvmsg calls, same guarantees.
    /// The outer error means the input is not a sequence of netlink messages.
    pub fn batch(&mut self, msgs: &mut [u8]) -> Result<Vec<AckResult>, NetlinkError> {
        let mut bounds = Vec::new();
        let mut off = 0;
        while off < msgs.len() {
            let h = MsgHeader::parse(&msgs[off..])
                .map_err(|e| NetlinkError::InvalidRequest(format!("message at byte {off}: {e}")))?;
            let end = off + align(h.len as usize);
            if end > msgs.len() {
                return Err(NetlinkError::InvalidRequest(format!(
                    "message at byte {off} is not padded to 4 bytes"
                )));
            }
            bounds.push((off, end));
            off = end;
        }

        let mut results: Vec<Option<AckResult>> = Vec::with_capacity(bounds.len());
        results.resize_with(bounds.len(), || None);
        let mut first = 0;
        let mut aborted = false;
        while first < bounds.len() {
            // Pack messages until the byte or message budget is reached (at least one).
            let start = bounds[first].0;
            let mut last = first + 1;
            while last < bounds.len()
                && bounds[last].1 - start <= self.batch_bytes
                && last - first < self.batch_messages
            {
                last += 1;
            }
            if aborted {
                for r in &mut results[first..last] {
                    *r = Some(Err(NetlinkError::NotSent));
                }
                first = last;
                continue;
            }
            let base = self.seq.wrapping_add(1);
            let implicit = self.ack_mode == AckMode::ErrorsAndLast;
            for (i, &(s, _)) in bounds[first..last].iter().enumerate() {
                let seq = self.next_seq();
                let mut h = MsgHeader::parse(&msgs[s..])?;
                h.flags |= NLM_F_REQUEST | NLM_F_ACK;
                if implicit && first + i + 1 < last {
                    h.flags &= !NLM_F_ACK;
                }
                h.seq = seq;
                h.pid = 0;
                h.emit(&mut msgs[s..]);
            }
            let end = bounds[last - 1].1;
            if let Err(e) = self.send(&msgs[start..end], last - first) {
                // Nothing of a failed sendmsg was processed.
                for r in &mut results[first..last] {
                    *r = Some(Err(e.duplicate()));
                }
                first = last;
                continue;
            }
            if let Err(e) = self.collect_acks(base, &mut results[first..last], implicit) {
                // Timeout, garbled reply or broken socket: the outcome of the
                // rest of this sendmsg is unknown, and later ones stay unsent.
                for r in &mut results[first..last] {
                    if r.is_none() {
                        *r = Some(Err(e.duplicate()));
                    }
                }
                aborted = true;
            }
            first = last;
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(NetlinkError::NotSent)))
            .collect())
    }

    /// Reads ACKs for the messages numbered `base..base+results.len()`; with
    /// `implicit`, only errors and the last message's ACK are expected.
    fn collect_acks(
        &mut self,
        base: u32,
        results: &mut [Option<AckResult>],
        implicit: bool,
    ) -> Result<(), NetlinkError> {
        let mut pending = if implicit { 1 } else { results.len() };
        let last = results.len().saturating_sub(1);
        let mut overrun = false;
        while pending > 0 {
            // After an overrun every ACK that survived is already queued (the
            // kernel handled the whole sendmsg synchronously): drain, don't wait.
            let n = match self.recv(overrun) {
                Ok(Some(n)) => n,
                Ok(None) => {
                    overrun = true;
                    continue;
                }
                // Drained: whatever has not arrived was dropped.
                Err(NetlinkError::Timeout(_)) if overrun => break,
                Err(e) => return Err(e),
            };
            for m in Messages::new(&self.rbuf[..n]) {
                let (h, payload) = m?;
                let idx = h.seq.wrapping_sub(base) as usize;
                if idx >= results.len() || h.msg_type != NLMSG_ERROR {
                    continue; // stale reply of an earlier request, or data
                }
                if results[idx].is_none() {
                    results[idx] = Some(parse_ack(&h, payload));
                    if !implicit || idx == last {
                        pending -= 1;
                    }
                }
            }
        }
        for (i, r) in results.iter_mut().enumerate() {
            if r.is_none() && implicit && !overrun {
                // Processed before the last message and no error came back.
                *r = Some(Ok(()));
            } else if r.is_none() {
                *r = Some(Err(NetlinkError::Unconfirmed {
                    seq: base.wrapping_add(i as u32),
                }));
            }
        }
        Ok(())
    }

    /// Sends one request with NLM_F_ACK and collects its data replies into
    /// `replies` (cleared first) until the ACK arrives.
    pub fn request(&mut self, msg: &mut [u8], replies: &mut Replies) -> Result<(), NetlinkError> {
        replies.clear();
        let mut h = MsgHeader::parse(msg)?;
        let seq = self.next_seq();
        h.flags |= NLM_F_REQUEST | NLM_F_ACK;
        h.seq = seq;
        h.pid = 0;
        h.emit(msg);
        self.send(&msg[..h.len as usize], 1)?;
        loop {
            let n = self.recv(false)?.ok_or(NetlinkError::Unconfirmed { seq })?;
            for m in Messages::new(&self.rbuf[..n]) {
                let (rh, payload) = m?;
                if rh.seq != seq {
                    continue;
                }
                match rh.msg_type {
                    NLMSG_ERROR => return parse_ack(&rh, payload),
                    NLMSG_NOOP | NLMSG_OVERRUN | NLMSG_DONE => {}
                    t => replies.push(t, rh.flags, payload),
                }
            }
        }
    }

    /// Dumps: sends `msg` with NLM_F_DUMP and collects every NLM_F_MULTI part
    /// until NLMSG_DONE. A dump the kernel flags inconsistent (NLM_F_DUMP_INTR,
    /// the table changed under it) is restarted, up to [`DUMP_RETRIES`] times.
    pub fn dump(&mut self, msg: &mut [u8], replies: &mut Replies) -> Result<(), NetlinkError> {
        let mut h = MsgHeader::parse(msg)?;
        for _ in 0..DUMP_RETRIES {
            replies.clear();
            let seq = self.next_seq();
            h.flags |= NLM_F_REQUEST | NLM_F_DUMP;
            h.seq = seq;
            h.pid = 0;
            h.emit(msg);
            self.send(&msg[..h.len as usize], 1)?;
            if !self.collect_dump(seq, replies)? {
                return Ok(());
            }
            tracing::debug!(seq, "netlink dump interrupted, restarting");
        }
        Err(NetlinkError::DumpInterrupted(DUMP_RETRIES))
    }

    /// Reads one dump; returns whether it was interrupted.
    fn collect_dump(&mut self, seq: u32, replies: &mut Replies) -> Result<bool, NetlinkError> {
        let mut interrupted = false;
        loop {
            let n = self.recv(false)?.ok_or(NetlinkError::Unconfirmed { seq })?;
            for m in Messages::new(&self.rbuf[..n]) {
                let (h, payload) = m?;
                if h.seq != seq {
                    continue;
                }
                if h.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match h.msg_type {
                    NLMSG_DONE => {
                        parse_done(payload)?;
                        return Ok(interrupted);
                    }
                    NLMSG_ERROR => {
                        parse_ack(&h, payload)?;
                        return Ok(interrupted);
                    }
                    NLMSG_NOOP | NLMSG_OVERRUN => {}
                    t => replies.push(t, h.flags, payload),
                }
            }
        }
    }
}

/// Decodes an NLMSG_DONE payload: it carries the dump's own error code
/// (negative errno, then extended-ACK attributes), or nothing.
pub fn parse_done(payload: &[u8]) -> Result<(), NetlinkError> {
    if let Some(b) = payload.first_chunk::<4>() {
        let code = i32::from_ne_bytes(*b);
        if code < 0 {
            // Saturating: a garbled i32::MIN must not overflow (found by fuzzing).
            return Err(NetlinkError::Kernel {
                errno: code.saturating_neg(),
                message: ext_ack_message(&payload[4..]),
            });
        }
    }
    Ok(())
}

/// Decodes an NLMSG_ERROR payload: errno 0 is an ACK, anything else the kernel's refusal.
pub fn parse_ack(h: &MsgHeader, payload: &[u8]) -> AckResult {
    if payload.len() < 4 {
        return Err(NetlinkError::Decode(format!(
            "NLMSG_ERROR of {} bytes has no error code",
            payload.len()
        )));
    }
    let code = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    if code == 0 {
        return Ok(());
    }
    let mut message = None;
    if h.flags & NLM_F_ACK_TLVS != 0 && payload.len() >= 4 + NLMSG_HDRLEN {
        // The echoed request: its header only when capped, else the whole message.
        let echoed = &payload[4..];
        let skip = if h.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            let len = u32::from_ne_bytes([echoed[0], echoed[1], echoed[2], echoed[3]]) as usize;
            align(len.max(NLMSG_HDRLEN))
        };
        if let Some(tlvs) = echoed.get(skip..) {
            message = ext_ack_message(tlvs);
        }
    }
    Err(NetlinkError::Kernel {
        errno: code.unsigned_abs() as i32,
        message,
    })
}

/// The kernel's extended-ACK text (and missing attribute, if reported).
fn ext_ack_message(tlvs: &[u8]) -> Option<String> {
    let mut text = None;
    let mut missing = None;
    for nla in NlasIterator::new(tlvs) {
        let Ok(nla) = nla else { break };
        match nla.kind() {
            NLMSGERR_ATTR_MSG => {
                let v = nla.value();
                let v = v.strip_suffix(&[0]).unwrap_or(v);
                text = Some(String::from_utf8_lossy(v).into_owned());
            }
            NLMSGERR_ATTR_MISS_TYPE => {
                if let Ok(b) = <[u8; 4]>::try_from(nla.value()) {
                    missing = Some(u32::from_ne_bytes(b));
                }
            }
            _ => {}
        }
    }
    match (text, missing) {
        (Some(t), Some(m)) => Some(format!("{t}, missing attribute {m}")),
        (Some(t), None) => Some(t),
        (None, Some(m)) => Some(format!("missing attribute {m}")),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(len: u32, t: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0; NLMSG_HDRLEN];
        MsgHeader {
            len,
            msg_type: t,
            flags,
            seq,
            pid: 0,
        }
        .emit(&mut v);
        v.extend_from_slice(payload);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    #[test]
    fn messages_iterates_and_rejects_bad_lengths() {
        let mut buf = msg(20, 16, 0, 1, &[1, 2, 3, 4]);
        buf.extend(msg(17, 16, 0, 2, &[9]));
        let got: Vec<_> = Messages::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, &[1, 2, 3, 4]);
        assert_eq!(got[1].0.seq, 2);
        assert_eq!(got[1].1, &[9]);

        for bad in [msg(8, 2, 0, 1, &[]), msg(200, 2, 0, 1, &[0; 4])] {
            let r: Result<Vec<_>, _> = Messages::new(&bad).collect();
            assert!(matches!(r, Err(NetlinkError::Decode(_))), "{r:?}");
        }
        let r: Result<Vec<_>, _> = Messages::new(&[1, 2, 3]).collect();
        assert!(r.is_err());
    }

    #[test]
    fn ack_with_extack_text() {
        // error -22, capped echo of the request header, then NLMSGERR_ATTR_MSG.
        let mut p = (-22i32).to_ne_bytes().to_vec();
        p.extend(msg(40, 0x1c, 5, 7, &[]));
        let text = b"Attribute failed policy validation\0";
        let mut nla = ((4 + text.len()) as u16).to_ne_bytes().to_vec();
        nla.extend(1u16.to_ne_bytes());
        nla.extend_from_slice(text);
        while !nla.len().is_multiple_of(4) {
            nla.push(0);
        }
        p.extend(nla);
        let h = MsgHeader {
            len: (NLMSG_HDRLEN + p.len()) as u32,
            msg_type: NLMSG_ERROR,
            flags: NLM_F_CAPPED | NLM_F_ACK_TLVS,
            seq: 7,
            pid: 0,
        };
        match parse_ack(&h, &p) {
            Err(NetlinkError::Kernel { errno, message }) => {
                assert_eq!(errno, 22);
                assert_eq!(
                    message.as_deref(),
                    Some("Attribute failed policy validation")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_ack(&h, &0i32.to_ne_bytes()).is_ok());
        assert!(matches!(
            parse_ack(&h, &[0, 0]),
            Err(NetlinkError::Decode(_))
        ));
        // Garbage TLVs never panic.
        let mut junk = (-1i32).to_ne_bytes().to_vec();
        junk.extend([0xff; 30]);
        assert!(parse_ack(&h, &junk).is_err());
    }

    #[test]
    fn done_carries_the_dump_error_and_survives_i32_min() {
        assert!(parse_done(&[]).is_ok());
        assert!(parse_done(&0i32.to_ne_bytes()).is_ok());
        let mut p = (-95i32).to_ne_bytes().to_vec();
        p.extend([9, 0, 1, 0, b'n', b'o', b'p', b'e', 0, 0, 0, 0]);
        match parse_done(&p) {
            Err(NetlinkError::Kernel { errno: 95, message }) => {
                assert_eq!(message.as_deref(), Some("nope"))
            }
            other => panic!("{other:?}"),
        }
        // Negating i32::MIN overflowed here before.
        assert!(matches!(
            parse_done(&i32::MIN.to_ne_bytes()),
            Err(NetlinkError::Kernel {
                errno: i32::MAX,
                ..
            })
        ));
    }

    #[test]
    fn replies_store_payloads_back_to_back() {
        let mut r = Replies::new();
        r.push(20, 2, &[1, 2]);
        r.push(21, 0, &[3]);
        let v: Vec<_> = r.iter().collect();
        assert_eq!(v[0].payload, &[1, 2]);
        assert_eq!(v[1].msg_type, 21);
        assert_eq!(v[1].payload, &[3]);
        r.clear();
        assert!(r.is_empty());
    }

    /// A CTRL_CMD_GETFAMILY request for `name` (nlctrl is always there).
    fn get_family(name: &str) -> Vec<u8> {
        use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
        use netlink_packet_generic::GenlMessage;
        use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
        use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
        let mut nlas = vec![];
        if !name.is_empty() {
            nlas.push(GenlCtrlAttrs::FamilyName(name.to_owned()));
        }
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(GenlMessage::from_payload(GenlCtrl {
                cmd: GenlCtrlCmd::GetFamily,
                nlas,
            })),
        );
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn batch_dump_and_request_against_nlctrl() {
        let Ok(mut s) = NetlinkSocket::new(protocols::NETLINK_GENERIC) else {
            return; // no netlink in this sandbox
        };
        // One sendmsg, three requests, one failing in the middle: the kernel goes on.
        let mut msgs = get_family("nlctrl");
        msgs.extend(get_family("no-such-family"));
        msgs.extend(get_family("nlctrl"));
        let r = s.batch(&mut msgs).unwrap();
        assert_eq!(r.len(), 3);
        assert!(r[0].is_ok(), "{:?}", r[0]);
        assert_eq!(r[1].as_ref().unwrap_err().errno(), Some(2), "ENOENT");
        assert!(r[2].is_ok(), "{:?}", r[2]);
        assert_eq!(s.stats().sendmsg_calls, 1);
        assert_eq!(s.stats().messages_sent, 3);

        // Same with ACKs only on the last message: errors still come back.
        let mut s2 = NetlinkSocket::with_config(
            protocols::NETLINK_GENERIC,
            SocketConfig {
                ack_mode: AckMode::ErrorsAndLast,
                ..SocketConfig::default()
            },
        )
        .unwrap();
        let mut msgs = get_family("nlctrl");
        msgs.extend(get_family("no-such-family"));
        msgs.extend(get_family("nlctrl"));
        msgs.extend(get_family("nlctrl"));
        let r = s2.batch(&mut msgs).unwrap();
        assert!(r[0].is_ok() && r[2].is_ok() && r[3].is_ok(), "{r:?}");
        assert_eq!(r[1].as_ref().unwrap_err().errno(), Some(2), "ENOENT");

        // A dump of every family includes nlctrl itself.
        let mut replies = Replies::new();
        let mut all = get_family("");
        s.dump(&mut all, &mut replies).unwrap();
        assert!(replies.len() > 1);
        assert!(
            replies
                .iter()
                .any(|r| r.payload.windows(7).any(|w| w == b"nlctrl\0"))
        );

        // genl resolution goes through request() and is cached.
        assert_eq!(s.genl_family_id("nlctrl").unwrap(), 0x10);
        let sent = s.stats().sendmsg_calls;
        assert_eq!(s.genl_family_id("nlctrl").unwrap(), 0x10);
        assert_eq!(s.stats().sendmsg_calls, sent);
        assert_eq!(
            s.genl_family_id("no-such-family").unwrap_err().errno(),
            Some(2)
        );
    }

    #[test]
    fn batch_rejects_malformed_input_without_sending() {
        let Ok(mut s) = NetlinkSocket::new(netlink_sys::protocols::NETLINK_GENERIC) else {
            return; // no netlink in this sandbox
        };
        let mut bad = vec![0u8; 10];
        assert!(matches!(
            s.batch(&mut bad),
            Err(NetlinkError::InvalidRequest(_))
        ));
        assert_eq!(s.stats().sendmsg_calls, 0);
        let (bytes, msgs) = s.batch_limits();
        assert!(bytes >= 4096 && msgs >= 16);
    }
}
