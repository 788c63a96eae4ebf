//! The compact binary message envelope stored in `q/<topic>/msg`.
//!
//! ```text
//! format 1 | seq u64 | timestamp_us u64 | topic u16+bytes | sender u16+bytes
//! | correlation u16+bytes | header count u16, each (key u16+bytes, value u32+bytes)
//! | payload u32+bytes
//! ```
//! All integers big-endian. Decoding checks every length against what is left,
//! so a truncated or corrupt value is an error, never a panic.

use std::collections::BTreeMap;

use crate::{Error, Result};

const FORMAT: u8 = 1;

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Envelope {
    /// Sequence number in its topic (its id there).
    pub seq: u64,
    /// When it was published, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// Topic.
    pub topic: String,
    /// Publisher identity, stamped by the node.
    pub sender: String,
    /// Correlation id (tracing span across actors); empty when none.
    pub correlation: String,
    /// Headers (`msg-id`, dead-letter reasons, ...).
    pub headers: BTreeMap<String, Vec<u8>>,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let len = u16::try_from(s.len()).map_err(|_| Error::Corrupt {
        tree: "(envelope)".into(),
        why: format!("a string field is {} bytes; the limit is 65535", s.len()),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

impl Envelope {
    /// Encodes the envelope.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(64 + self.payload.len() + self.topic.len() + self.sender.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp_us.to_be_bytes());
        put_str(&mut out, &self.topic)?;
        put_str(&mut out, &self.sender)?;
        put_str(&mut out, &self.correlation)?;
        let count = u16::try_from(self.headers.len()).map_err(|_| Error::Corrupt {
            tree: "(envelope)".into(),
            why: "more than 65535 headers".into(),
        })?;
        out.extend_from_slice(&count.to_be_bytes());
        for (k, v) in &self.headers {
            put_str(&mut out, k)?;
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        }
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// Decodes an envelope; `tree` names the source in errors.
    pub fn decode(tree: &str, bytes: &[u8]) -> Result<Self> {
        let mut r = Reader { tree, bytes, at: 0 };
        let format = r.take(1)?[0];
        if format != FORMAT {
            return Err(r.corrupt(format!("envelope format {format}, this build reads {FORMAT}")));
        }
        let seq = r.u64()?;
        let timestamp_us = r.u64()?;
        let topic = r.string()?;
        let sender = r.string()?;
        let correlation = r.string()?;
        let count = r.u16()?;
        let mut headers = BTreeMap::new();
        for _ in 0..count {
            let k = r.string()?;
            let n = r.u32()? as usize;
            headers.insert(k, r.take(n)?.to_vec());
        }
        let n = r.u32()? as usize;
        let payload = r.take(n)?.to_vec();
        if r.at != bytes.len() {
            return Err(r.corrupt(format!("{} trailing bytes", bytes.len() - r.at)));
        }
        Ok(Self {
            seq,
            timestamp_us,
            topic,
            sender,
            correlation,
            headers,
            payload,
        })
    }

    /// A header as UTF-8 text, if present and valid.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }
}

struct Reader<'a> {
    tree: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, why: String) -> Error {
        Error::Corrupt {
            tree: self.tree.to_owned(),
            why,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| {
                self.corrupt(format!(
                    "envelope truncated: need {n} bytes at offset {}, {} left",
                    self.at,
                    self.bytes.len() - self.at
                ))
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.corrupt("a string field is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn round_trips_and_never_panics_on_garbage(
            seq in any::<u64>(), ts in any::<u64>(),
            topic in "[a-z.]{0,40}", sender in "\\PC{0,20}", correlation in "[a-f0-9]{0,32}",
            headers in prop::collection::btree_map("[a-z-]{1,10}", prop::collection::vec(any::<u8>(), 0..20), 0..4),
            payload in prop::collection::vec(any::<u8>(), 0..300),
            cut in any::<prop::sample::Index>(),
        ) {
            let e = Envelope { seq, timestamp_us: ts, topic, sender, correlation, headers, payload };
            let bytes = e.encode().unwrap();
            prop_assert_eq!(Envelope::decode("t", &bytes).unwrap(), e);
            let n = cut.index(bytes.len());
            prop_assert!(Envelope::decode("t", &bytes[..n]).is_err());
        }
    }

    #[test]
    fn a_128_byte_payload_costs_little() {
        let e = Envelope {
            topic: "orders".into(),
            sender: "app".into(),
            payload: vec![7; 128],
            ..Default::default()
        };
        // 1 format + 16 seq/ts + (2+6) topic + (2+3) sender + 2 correlation + 2 header count + 4 + 128
        assert_eq!(e.encode().unwrap().len(), 166);
    }
}
