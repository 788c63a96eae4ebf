//! Chunks: how a topic's messages sit in `q/<topic>/msg`.
//!
//! A value holds consecutive messages of the topic under the key of the first
//! one's sequence number (u64, big-endian):
//!
//! ```text
//! format 2 | count u16 | length u32 x count | encoded envelopes, back to back
//! ```
//!
//! A value that starts with the envelope's own format byte (1) is a chunk of
//! one message: what earlier builds wrote for every message, and what
//! dead-lettering and replays still write, one transaction per message.
//!
//! Why chunks: sled 0.34 copies a leaf node on every insert, so one insert per
//! publish was ~20% of the node's CPU at 16 pipelining publishers. The queue
//! now buffers a topic's newest messages (confirmed through the write-ahead
//! log) and writes them as one value per [`MAX_MESSAGES`] or [`MAX_BYTES`].

use crate::{Error, Result};

const FORMAT: u8 = 2;
const ENVELOPE_FORMAT: u8 = 1;

/// A chunk is written once it holds this many messages ...
pub(crate) const MAX_MESSAGES: usize = 64;
/// ... or this many bytes of envelopes.
pub(crate) const MAX_BYTES: usize = 32 * 1024;

/// Encodes consecutive messages (each an encoded envelope) as one chunk.
pub(crate) fn encode(records: &[Vec<u8>]) -> Vec<u8> {
    debug_assert!(!records.is_empty() && records.len() <= u16::MAX as usize);
    let body: usize = records.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(3 + 4 * records.len() + body);
    out.push(FORMAT);
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_be_bytes());
    }
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

/// A corrupt-value error for `tree` saying `why`.
pub(crate) fn corrupt(tree: &str, why: String) -> Error {
    Error::Corrupt {
        tree: tree.to_owned(),
        why,
    }
}

/// The length of each message in a chunk, checked against the value's size.
pub(crate) fn lengths(tree: &str, value: &[u8]) -> Result<Vec<u32>> {
    match value.first() {
        Some(&ENVELOPE_FORMAT) => Ok(vec![value.len() as u32]),
        Some(&FORMAT) => {
            let count = value
                .get(1..3)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
                .ok_or_else(|| corrupt(tree, "chunk truncated in its header".into()))?;
            let table = value.get(3..3 + 4 * count).ok_or_else(|| {
                corrupt(
                    tree,
                    format!("chunk of {count} messages truncated in its length table"),
                )
            })?;
            let lens: Vec<u32> = table
                .chunks_exact(4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let body: u64 = lens.iter().map(|&l| u64::from(l)).sum();
            let have = (value.len() - 3 - 4 * count) as u64;
            if count == 0 || body != have || lens.contains(&0) {
                return Err(corrupt(
                    tree,
                    format!(
                        "chunk of {count} messages: lengths add up to {body} bytes, the value holds {have}"
                    ),
                ));
            }
            Ok(lens)
        }
        Some(f) => Err(corrupt(
            tree,
            format!("value format {f}; this build reads 1 (one message) and 2 (a chunk)"),
        )),
        None => Err(corrupt(tree, "empty value".into())),
    }
}

/// The `index`-th message (an encoded envelope) of a chunk.
pub(crate) fn message<'a>(tree: &str, value: &'a [u8], index: usize) -> Result<&'a [u8]> {
    let lens = lengths(tree, value)?;
    if value[0] == ENVELOPE_FORMAT {
        return if index == 0 {
            Ok(value)
        } else {
            Err(corrupt(tree, format!("message {index} of a one-message value")))
        };
    }
    let len = *lens
        .get(index)
        .ok_or_else(|| corrupt(tree, format!("message {index} of a chunk of {}", lens.len())))?;
    let start = 3 + 4 * lens.len() + lens[..index].iter().map(|&l| l as usize).sum::<usize>();
    Ok(&value[start..start + len as usize])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn every_message_reads_back_and_garbage_never_panics(
            records in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 1..70),
            cut in any::<prop::sample::Index>(),
        ) {
            let v = encode(&records);
            prop_assert_eq!(lengths("t", &v).unwrap().len(), records.len());
            for (i, r) in records.iter().enumerate() {
                prop_assert_eq!(message("t", &v, i).unwrap(), &r[..]);
            }
            prop_assert!(message("t", &v, records.len()).is_err());
            let n = cut.index(v.len());
            prop_assert!(lengths("t", &v[..n]).is_err());
        }
    }

    #[test]
    fn a_single_envelope_value_is_a_chunk_of_one() {
        let env = crate::queue::Envelope {
            seq: 7,
            payload: b"hi".to_vec(),
            ..Default::default()
        }
        .encode()
        .unwrap();
        assert_eq!(lengths("t", &env).unwrap(), vec![env.len() as u32]);
        assert_eq!(message("t", &env, 0).unwrap(), &env[..]);
        assert!(message("t", &env, 1).is_err());
        let err = lengths("t", &[9, 0, 0]).unwrap_err().to_string();
        assert!(err.contains("format 9"), "{err}");
    }
}
