//! ipset nfnetlink messages: `nlmsghdr` type `(NFNL_SUBSYS_IPSET << 8) | cmd`, `nfgenmsg`, attributes.

use netlink_packet_core::{DecodeError, Emitable, NlaBuffer, NlasIterator, ParseableParametrized};

use super::nla::{CmdAttr, DataSpace};
use crate::netlink::{MsgHeader, NLMSG_HDRLEN, align};

/// `NETLINK_NETFILTER`, the netlink protocol of nfnetlink.
pub const NETLINK_NETFILTER: isize = 12;
/// `NFNL_SUBSYS_IPSET`.
pub const NFNL_SUBSYS_IPSET: u16 = 6;
/// `NFNETLINK_V0`.
pub const NFNETLINK_V0: u8 = 0;
/// Size of `struct nfgenmsg`.
pub const NFGENMSG_LEN: usize = 4;
/// The protocol this crate speaks (`IPSET_PROTOCOL`).
pub const IPSET_PROTOCOL: u8 = 7;
/// The oldest protocol whose messages this crate can build (`IPSET_PROTOCOL_MIN`).
pub const IPSET_PROTOCOL_MIN: u8 = 6;
/// Set and type names hold at most 31 bytes plus NUL (`IPSET_MAXNAMELEN`).
pub const IPSET_MAXNAMELEN: usize = 32;
/// Longest comment the kernel accepts (`IPSET_MAX_COMMENT_SIZE`).
pub const IPSET_MAX_COMMENT_SIZE: usize = 255;

/// Command-level flags (`IPSET_FLAG_*`, in IPSET_ATTR_FLAGS).
pub const IPSET_FLAG_LIST_SETNAME: u32 = 1 << 1;
pub const IPSET_FLAG_LIST_HEADER: u32 = 1 << 2;
/// CADT flags (`IPSET_FLAG_*`, in IPSET_ATTR_CADT_FLAGS).
pub const IPSET_FLAG_NOMATCH: u32 = 1 << 2;
pub const IPSET_FLAG_WITH_COUNTERS: u32 = 1 << 3;
pub const IPSET_FLAG_WITH_COMMENT: u32 = 1 << 4;
pub const IPSET_FLAG_WITH_FORCEADD: u32 = 1 << 5;
pub const IPSET_FLAG_WITH_SKBINFO: u32 = 1 << 6;

/// ipset commands (`IPSET_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpsetCmd {
    Protocol,
    Create,
    Destroy,
    Flush,
    Rename,
    Swap,
    List,
    Save,
    Add,
    Del,
    Test,
    Header,
    Type,
    GetByName,
    GetByIndex,
    Other(u8),
}

impl From<IpsetCmd> for u8 {
    fn from(c: IpsetCmd) -> u8 {
        use IpsetCmd::*;
        match c {
            Protocol => 1,
            Create => 2,
            Destroy => 3,
            Flush => 4,
            Rename => 5,
            Swap => 6,
            List => 7,
            Save => 8,
            Add => 9,
            Del => 10,
            Test => 11,
            Header => 12,
            Type => 13,
            GetByName => 14,
            GetByIndex => 15,
            Other(n) => n,
        }
    }
}

impl From<u8> for IpsetCmd {
    fn from(n: u8) -> Self {
        use IpsetCmd::*;
        match n {
            1 => Protocol,
            2 => Create,
            3 => Destroy,
            4 => Flush,
            5 => Rename,
            6 => Swap,
            7 => List,
            8 => Save,
            9 => Add,
            10 => Del,
            11 => Test,
            12 => Header,
            13 => Type,
            14 => GetByName,
            15 => GetByIndex,
            n => Other(n),
        }
    }
}

impl IpsetCmd {
    /// The DATA nest of ADD/DEL/TEST holds an entry; every other command's a header.
    pub fn data_space(self) -> DataSpace {
        match self {
            IpsetCmd::Add | IpsetCmd::Del | IpsetCmd::Test => DataSpace::Adt,
            _ => DataSpace::Create,
        }
    }

    /// The netlink message type.
    pub fn msg_type(self) -> u16 {
        (NFNL_SUBSYS_IPSET << 8) | u8::from(self) as u16
    }
}

/// One ipset message: command, `nfgenmsg` and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsetMessage {
    pub cmd: IpsetCmd,
    /// `nfgen_family`; the kernel reads the set family from IPSET_ATTR_FAMILY instead.
    pub family: u8,
    pub version: u8,
    /// `res_id`, host order here (big-endian on the wire).
    pub res_id: u16,
    pub attrs: Vec<CmdAttr>,
}

impl IpsetMessage {
    /// A request as the ipset tool sends it: `nfgen_family` AF_INET, version 0, res_id 0.
    pub fn new(cmd: IpsetCmd, attrs: Vec<CmdAttr>) -> Self {
        IpsetMessage {
            cmd,
            family: 2,
            version: NFNETLINK_V0,
            res_id: 0,
            attrs,
        }
    }

    /// Parses a reply of netlink type `msg_type` (payload: `nfgenmsg` then attributes).
    pub fn parse(msg_type: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        if msg_type >> 8 != NFNL_SUBSYS_IPSET {
            return Err(DecodeError::from(format!(
                "message type {msg_type:#06x} is not of the ipset subsystem"
            )));
        }
        if payload.len() < NFGENMSG_LEN {
            return Err(DecodeError::from(format!(
                "ipset message of {} bytes has no nfgenmsg",
                payload.len()
            )));
        }
        let cmd = IpsetCmd::from((msg_type & 0xff) as u8);
        let space = cmd.data_space();
        let mut attrs = Vec::new();
        for nla in NlasIterator::new(&payload[NFGENMSG_LEN..]) {
            let nla: NlaBuffer<&[u8]> = nla.map_err(|e| {
                DecodeError::from(format!("malformed attribute in ipset {cmd:?} message: {e}"))
            })?;
            attrs.push(
                CmdAttr::parse_with_param(&nla, space)
                    .map_err(|e| DecodeError::from(format!("in ipset {cmd:?} message: {e}")))?,
            );
        }
        Ok(IpsetMessage {
            cmd,
            family: payload[0],
            version: payload[1],
            res_id: u16::from_be_bytes([payload[2], payload[3]]),
            attrs,
        })
    }

    /// The length of `nfgenmsg` plus attributes.
    pub fn payload_len(&self) -> usize {
        NFGENMSG_LEN + self.attrs.as_slice().buffer_len()
    }

    /// Writes `nfgenmsg` and the attributes into `buf` (exactly `payload_len` bytes).
    pub fn emit_payload(&self, buf: &mut [u8]) {
        buf[0] = self.family;
        buf[1] = self.version;
        buf[2..4].copy_from_slice(&self.res_id.to_be_bytes());
        self.attrs.as_slice().emit(&mut buf[NFGENMSG_LEN..]);
    }

    /// Appends this message as a complete netlink message with `flags`
    /// (seq and pid are left for the socket to fill in).
    pub fn append(&self, flags: u16, buf: &mut Vec<u8>) {
        let start = buf.len();
        let len = NLMSG_HDRLEN + self.payload_len();
        buf.resize(start + align(len), 0);
        MsgHeader {
            len: len as u32,
            msg_type: self.cmd.msg_type(),
            flags,
            seq: 0,
            pid: 0,
        }
        .emit(&mut buf[start..]);
        self.emit_payload(&mut buf[start + NLMSG_HDRLEN..start + len]);
    }

    /// The set name, if present.
    pub fn set_name(&self) -> Option<&str> {
        self.attrs.iter().find_map(|a| match a {
            CmdAttr::SetName(s) => Some(s.as_str()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipset::nla::{AdtAttr, IpNest};
    use crate::netlink::NLM_F_ACK;

    #[test]
    fn command_numbers() {
        for n in 0..=20u8 {
            assert_eq!(u8::from(IpsetCmd::from(n)), n);
        }
        assert_eq!(IpsetCmd::Create.msg_type(), 0x602);
        assert_eq!(IpsetCmd::Type.msg_type(), 0x60d);
        assert_eq!(IpsetCmd::Add.data_space(), DataSpace::Adt);
        assert_eq!(IpsetCmd::List.data_space(), DataSpace::Create);
    }

    #[test]
    fn add_request_bytes_match_the_ipset_tool() {
        // `ipset add -exist z 1.2.3.4,tcp:80 comment hi` as strace showed it,
        // minus the tool's LINENO 0 attribute.
        let msg = IpsetMessage::new(
            IpsetCmd::Add,
            vec![
                CmdAttr::Protocol(7),
                CmdAttr::SetName("z".into()),
                CmdAttr::AdtData(vec![
                    AdtAttr::Ip(IpNest::request("1.2.3.4".parse().unwrap())),
                    AdtAttr::Port(80),
                    AdtAttr::Proto(6),
                    AdtAttr::Comment("hi".into()),
                ]),
            ],
        );
        let mut buf = Vec::new();
        msg.append(NLM_F_ACK, &mut buf);
        let want: Vec<u8> = [
            &[76u8, 0, 0, 0, 9, 6, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[2, 0, 0, 0],
            &[5, 0, 1, 0, 7, 0, 0, 0],
            &[6, 0, 2, 0, b'z', 0, 0, 0],
            &[40, 0, 7, 0x80],
            &[12, 0, 1, 0x80, 8, 0, 1, 0x40, 1, 2, 3, 4],
            &[6, 0, 4, 0x40, 0, 80, 0, 0],
            &[5, 0, 7, 0, 6, 0, 0, 0],
            &[7, 0, 26, 0, b'h', b'i', 0, 0],
        ]
        .concat();
        assert_eq!(buf, want);
        let h = MsgHeader::parse(&buf).unwrap();
        let back = IpsetMessage::parse(h.msg_type, &buf[NLMSG_HDRLEN..]).unwrap();
        assert_eq!(back, msg);
        assert_eq!(back.set_name(), Some("z"));
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(IpsetMessage::parse(0x1c, &[2, 0, 0, 0]).is_err());
        assert!(IpsetMessage::parse(0x607, &[2, 0]).is_err());
        assert!(IpsetMessage::parse(0x607, &[2, 0, 0, 0, 9, 0, 1, 0]).is_err());
        let m = IpsetMessage::parse(0x607, &[10, 0, 0, 1]).unwrap();
        assert_eq!((m.family, m.res_id), (10, 1));
    }
}
