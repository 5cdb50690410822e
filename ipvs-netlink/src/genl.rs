//! Generic netlink: resolving a family's id by name through the "nlctrl" family, cached per socket.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};

use crate::error::NetlinkError;
use crate::netlink::{NetlinkSocket, Replies};

/// Size of `struct genlmsghdr` (cmd, version, reserved).
pub const GENL_HDRLEN: usize = 4;

impl NetlinkSocket {
    /// The id of generic netlink family `name` (e.g. "IPVS"), asked once per socket.
    ///
    /// An absent family (module not loaded) is `Kernel { errno: ENOENT }`.
    pub fn genl_family_id(&mut self, name: &str) -> Result<u16, NetlinkError> {
        if let Some(&id) = self.genl_families.get(name) {
            return Ok(id);
        }
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(GenlMessage::from_payload(GenlCtrl {
                cmd: GenlCtrlCmd::GetFamily,
                nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
            })),
        );
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        let mut replies = Replies::new();
        self.request(&mut buf, &mut replies)?;
        for reply in replies.iter() {
            if let Some(id) = family_id_from_reply(reply.payload)? {
                self.genl_families.insert(name.to_owned(), id);
                return Ok(id);
            }
        }
        Err(NetlinkError::Decode(format!(
            "nlctrl answered without an id for family {name}"
        )))
    }
}

/// Finds CTRL_ATTR_FAMILY_ID in a NEWFAMILY reply payload (genl header + attributes).
///
/// Public for the fuzz targets (`fuzz/`), which feed it arbitrary bytes.
#[doc(hidden)]
pub fn family_id_from_reply(payload: &[u8]) -> Result<Option<u16>, NetlinkError> {
    use netlink_packet_core::{NlaBuffer, NlasIterator, Parseable};
    let attrs = payload
        .get(GENL_HDRLEN..)
        .ok_or_else(|| NetlinkError::Decode("nlctrl reply shorter than its genl header".into()))?;
    for nla in NlasIterator::new(attrs) {
        let nla: NlaBuffer<&[u8]> = nla?;
        // Only the attribute we need; ops/policies are skipped unparsed.
        if nla.kind() == 1
            && let GenlCtrlAttrs::FamilyId(id) = GenlCtrlAttrs::parse(&nla)?
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_family_id_and_rejects_short_payloads() {
        // genl header, CTRL_ATTR_FAMILY_NAME "IPVS", CTRL_ATTR_FAMILY_ID 0x1e.
        let payload = [
            1, 2, 0, 0, //
            9, 0, 2, 0, b'I', b'P', b'V', b'S', 0, 0, 0, 0, //
            6, 0, 1, 0, 0x1e, 0, 0, 0,
        ];
        assert_eq!(family_id_from_reply(&payload).unwrap(), Some(0x1e));
        assert!(family_id_from_reply(&[1, 2]).is_err());
        assert_eq!(family_id_from_reply(&payload[..16]).unwrap(), None);
        // A FAMILY_ID of the wrong size is a decode error, not a panic.
        let bad = [1, 2, 0, 0, 5, 0, 1, 0, 7, 0, 0, 0];
        assert!(family_id_from_reply(&bad).is_err());
    }
}
