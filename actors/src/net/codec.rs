//! The request-response codec of every vigil protocol: one frame per stream,
//! `u32` big-endian length then the body, with an explicit size limit per
//! direction (the stock cbor/json codecs cap at 1 MiB and say nothing useful
//! about a violation). A frame over the limit is refused before its body is
//! read; a body that does not decode is refused with what was wrong. Both come
//! back as [`Frame::Invalid`] rather than as I/O errors: libp2p's
//! request-response drops a failed `read_request` with only a debug log, and
//! the network must know which peer sent the bad frame to score it.

use std::io;
use std::marker::PhantomData;

use async_trait::async_trait;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length prefix is over the limit.
    #[error("frame of {len} bytes is over the {max}-byte limit of this protocol")]
    Oversized {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body does not decode.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl WireError {
    /// The wire error inside an I/O error from the codec, if any.
    pub fn of(e: &io::Error) -> Option<&WireError> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<WireError>())
    }
}

/// A frame as read: a decoded message, or why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<T> {
    /// A well-formed message.
    Valid(T),
    /// A frame over the limit or that does not decode.
    Invalid(WireError),
}

/// A message with a compact binary encoding.
pub trait Wire: Sized + Send + 'static {
    /// Encodes the message.
    fn encode(&self) -> Vec<u8>;
    /// Decodes a whole frame body; says what was wrong otherwise.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

/// Raw bytes, for tools and tests that speak a protocol by hand.
impl Wire for Vec<u8> {
    fn encode(&self) -> Vec<u8> {
        self.clone()
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(bytes.to_vec())
    }
}

/// Length-prefixed frames with limits.
#[derive(Debug)]
pub struct FrameCodec<Req, Resp> {
    /// Largest request body read, bytes.
    pub max_request: usize,
    /// Largest response body read, bytes.
    pub max_response: usize,
    _m: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> Clone for FrameCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::new(self.max_request, self.max_response)
    }
}

impl<Req, Resp> FrameCodec<Req, Resp> {
    /// A codec with the given limits.
    pub fn new(max_request: usize, max_response: usize) -> Self {
        Self {
            max_request,
            max_response,
            _m: PhantomData,
        }
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            WireError::Oversized { len, max },
        ));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame over 4 GiB"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.close().await
}

/// Reads one frame; a violation becomes [`Frame::Invalid`], a broken stream an error.
async fn read_message<M: Wire, T: AsyncRead + Unpin + Send>(
    p: &StreamProtocol,
    io: &mut T,
    max: usize,
) -> io::Result<Frame<M>> {
    match read_frame(io, max).await {
        Ok(body) => {
            count(p, "in", body.len());
            Ok(match M::decode(&body) {
                Ok(m) => Frame::Valid(m),
                Err(why) => Frame::Invalid(WireError::Malformed(why)),
            })
        }
        Err(e) => match WireError::of(&e) {
            Some(w) => Ok(Frame::Invalid(w.clone())),
            None => Err(e),
        },
    }
}

async fn write_message<M: Wire, T: AsyncWrite + Unpin + Send>(
    p: &StreamProtocol,
    io: &mut T,
    m: Frame<M>,
) -> io::Result<()> {
    match m {
        Frame::Valid(m) => {
            let body = m.encode();
            count(p, "out", body.len());
            write_frame(io, &body).await
        }
        Frame::Invalid(e) => Err(io::Error::other(format!(
            "refusing to send an invalid frame: {e}"
        ))),
    }
}

fn count(protocol: &StreamProtocol, direction: &'static str, n: usize) {
    let name = protocol
        .as_ref()
        .rsplit('/')
        .nth(1)
        .unwrap_or("unknown")
        .to_owned();
    metrics::counter!(crate::metrics::NET_BYTES, "protocol" => name, "direction" => direction)
        .increment(n as u64 + 4);
}

#[async_trait]
impl<Req: Wire, Resp: Wire> libp2p::request_response::Codec for FrameCodec<Req, Resp> {
    type Protocol = StreamProtocol;
    type Request = Frame<Req>;
    type Response = Frame<Resp>;

    async fn read_request<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<Frame<Req>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(p, io, self.max_request).await
    }

    async fn read_response<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<Frame<Resp>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(p, io, self.max_response).await
    }

    async fn write_request<T>(&mut self, p: &StreamProtocol, io: &mut T, req: Frame<Req>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(p, io, req).await
    }

    async fn write_response<T>(&mut self, p: &StreamProtocol, io: &mut T, resp: Frame<Resp>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(p, io, resp).await
    }
}

/// `/vigil/<g8>/status/1`: exchanged after identify, both ways. Later issues
/// add the epoch head here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Full genesis hash.
    pub genesis: [u8; 32],
    /// Highest epoch known (0 until epochs exist).
    pub head: u64,
    /// Software and version, e.g. `vigil/0.1.0`.
    pub agent: String,
}

/// Largest status frame.
pub const STATUS_MAX: usize = 1024;
const STATUS_V1: u8 = 1;

impl Wire for Status {
    fn encode(&self) -> Vec<u8> {
        let agent = &self.agent.as_bytes()[..self.agent.len().min(255)];
        let mut out = Vec::with_capacity(42 + agent.len());
        out.push(STATUS_V1);
        out.extend_from_slice(&self.genesis);
        out.extend_from_slice(&self.head.to_be_bytes());
        out.push(agent.len() as u8);
        out.extend_from_slice(agent);
        out
    }

    fn decode(b: &[u8]) -> Result<Self, String> {
        match b.first() {
            None => return Err("empty status".into()),
            Some(&STATUS_V1) => {}
            Some(v) => return Err(format!("status version {v} (this node speaks 1)")),
        }
        if b.len() < 42 {
            return Err(format!("status of {} bytes, at least 42 expected", b.len()));
        }
        let n = b[41] as usize;
        if b.len() != 42 + n {
            return Err(format!(
                "status of {} bytes, {} expected for a {n}-byte agent",
                b.len(),
                42 + n
            ));
        }
        let agent = std::str::from_utf8(&b[42..]).map_err(|_| "agent is not UTF-8".to_string())?;
        Ok(Status {
            genesis: b[1..33].try_into().map_err(|_| "genesis".to_string())?,
            head: u64::from_be_bytes(b[33..41].try_into().map_err(|_| "head".to_string())?),
            agent: agent.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn status_round_trips() {
        let s = Status {
            genesis: [7; 32],
            head: 42,
            agent: "vigil/0.1.0".into(),
        };
        assert_eq!(Status::decode(&s.encode()).unwrap(), s);
    }

    proptest! {
        #[test]
        fn status_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Status::decode(&bytes);
        }

        #[test]
        fn truncated_status_is_refused(cut in 0usize..53) {
            let s = Status { genesis: [1; 32], head: 9, agent: "vigil/0.1.0".into() };
            let b = s.encode();
            prop_assume!(cut < b.len());
            prop_assert!(Status::decode(&b[..cut]).is_err());
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        let mut bytes = (STATUS_MAX as u32 + 1).to_be_bytes().to_vec();
        bytes.extend(vec![0u8; 8]);
        let mut io = futures::io::Cursor::new(bytes);
        let e = futures::executor::block_on(read_frame(&mut io, STATUS_MAX)).unwrap_err();
        assert_eq!(
            WireError::of(&e),
            Some(&WireError::Oversized {
                len: STATUS_MAX + 1,
                max: STATUS_MAX
            })
        );
    }
}
