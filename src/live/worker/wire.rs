//! The messages between the node and a stream's media process, on the
//! child's stdin (node → child) and stdout (child → node).
//!
//! A message is a JSON header and a payload of raw bytes (an access unit, an
//! encoded frame, a JPEG), each after its length as a big-endian `u32`:
//!
//! ```text
//! [u32 header length][header JSON][u32 payload length][payload]
//! ```
//!
//! Written here rather than taken from a crate: it is a few lines, and the
//! node must bound what a (possibly compromised) child can make it allocate
//! ([`MAX_HEADER`], [`MAX_PAYLOAD`]), which a general framing crate leaves to
//! its user anyway.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::config::LogConfig;
use crate::presets::live::LiveTranscode;
use crate::sandbox::Policy;

/// Largest header either side accepts.
pub const MAX_HEADER: usize = 64 << 10;
/// Largest payload either side accepts (an access unit or a JPEG).
pub const MAX_PAYLOAD: usize = 32 << 20;

/// What the node asks of the media process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Always first: the sandbox the child enters before it reads media.
    Start { policy: Policy, log: LogConfig },
    /// A publisher session starts: decode once, encode each rung at its size.
    Begin {
        session: u64,
        spec: LiveTranscode,
        sizes: Vec<(u32, u32)>,
    },
    /// One source access unit (payload: H.264 Annex B), pipeline time in ns;
    /// `cut` when the source starts a segment with it.
    Frame {
        session: u64,
        pts_ns: u64,
        dts_ns: u64,
        keyframe: bool,
        cut: bool,
    },
    /// The session is over: flush the encoders, then answer `Over`.
    Finish { session: u64 },
    /// Decode one keyframe (payload) into a JPEG `width` wide.
    Poster { id: u64, width: u32 },
}

/// What the media process answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// An encoded frame of rung `index` (payload: H.264 Annex B), at pipeline
    /// time `pts_ns`; `cut` when it is the keyframe forced where the source cut.
    Rung {
        session: u64,
        index: usize,
        pts_ns: u64,
        keyframe: bool,
        cut: bool,
    },
    /// A session ended.
    Over { session: u64, end: SessionEnd },
    /// A poster (payload: the JPEG), or why not.
    Poster { id: u64, error: Option<String> },
}

/// How a session ended in the media process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionEnd {
    /// Flushed after `Finish`.
    Drained,
    /// The pipeline failed.
    Failed { message: String },
    /// The decoder fell too far behind real time.
    Overloaded,
}

/// One message, ready to write.
pub fn encode<T: Serialize>(header: &T, payload: &[u8]) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(header)?;
    if json.len() > MAX_HEADER || payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message too large",
        ));
    }
    let mut out = Vec::with_capacity(8 + json.len() + payload.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Writes one message (blocking; the child's writer thread).
pub fn write<T: Serialize>(out: &mut impl Write, header: &T, payload: &[u8]) -> io::Result<()> {
    out.write_all(&encode(header, payload)?)?;
    out.flush()
}

fn length(bytes: [u8; 4], max: usize) -> io::Result<usize> {
    let len = u32::from_be_bytes(bytes) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message part of {len} bytes (at most {max})"),
        ));
    }
    Ok(len)
}

fn parse<T: DeserializeOwned>(json: &[u8]) -> io::Result<T> {
    serde_json::from_slice(json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one message (blocking); `None` at a clean end of the stream.
pub fn read<T: DeserializeOwned>(input: &mut impl Read) -> io::Result<Option<(T, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut json = vec![0u8; length(len, MAX_HEADER)?];
    input.read_exact(&mut json)?;
    input.read_exact(&mut len)?;
    let mut payload = vec![0u8; length(len, MAX_PAYLOAD)?];
    input.read_exact(&mut payload)?;
    Ok(Some((parse(&json)?, payload)))
}

/// Reads one message; `None` at a clean end of the stream.
pub async fn read_async<T: DeserializeOwned>(
    input: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<(T, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut json = vec![0u8; length(len, MAX_HEADER)?];
    input.read_exact(&mut json).await?;
    input.read_exact(&mut len).await?;
    let mut payload = vec![0u8; length(len, MAX_PAYLOAD)?];
    input.read_exact(&mut payload).await?;
    Ok(Some((parse(&json)?, payload)))
}

/// 90 kHz ticks (≥ 0) to nanoseconds, rounded up so that [`from_ns`] gives
/// the ticks back exactly.
pub fn to_ns(ticks: i64) -> u64 {
    ((ticks.max(0) as u128 * 100_000).div_ceil(9)) as u64
}

pub fn from_ns(ns: u64) -> i64 {
    (ns as u128 * 9 / 100_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_survive_the_trip_through_nanoseconds() {
        for ticks in [0, 1, 2, 3, 8, 9, 3003, 90_000, 123_456_789, 8_589_934_591] {
            assert_eq!(from_ns(to_ns(ticks)), ticks, "{ticks}");
        }
    }

    #[test]
    fn messages_round_trip_and_end_cleanly() {
        let mut buf = Vec::new();
        let frame = FromWorker::Rung {
            session: 3,
            index: 1,
            pts_ns: 42,
            keyframe: true,
            cut: false,
        };
        write(&mut buf, &frame, b"\0\0\0\x01\x65").unwrap();
        write(&mut buf, &FromWorker::Poster { id: 9, error: None }, b"").unwrap();
        let mut input = buf.as_slice();
        let (first, payload) = read::<FromWorker>(&mut input).unwrap().unwrap();
        assert!(matches!(
            first,
            FromWorker::Rung {
                session: 3,
                index: 1,
                pts_ns: 42,
                ..
            }
        ));
        assert_eq!(payload, b"\0\0\0\x01\x65");
        let (second, payload) = read::<FromWorker>(&mut input).unwrap().unwrap();
        assert!(matches!(second, FromWorker::Poster { id: 9, error: None }));
        assert!(payload.is_empty());
        assert!(read::<FromWorker>(&mut input).unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_and_garbled_messages_are_errors() {
        let mut huge = Vec::new();
        huge.extend_from_slice(&(MAX_HEADER as u32 + 1).to_be_bytes());
        assert!(read::<FromWorker>(&mut huge.as_slice()).is_err());
        assert!(
            read_async::<FromWorker>(&mut huge.as_slice())
                .await
                .is_err()
        );

        let mut payload = encode(&FromWorker::Poster { id: 1, error: None }, b"").unwrap();
        let at = payload.len() - 4;
        payload[at..].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        assert!(
            read_async::<FromWorker>(&mut payload.as_slice())
                .await
                .is_err()
        );

        let garbled = encode(&"not a message", b"").unwrap();
        assert!(
            read_async::<FromWorker>(&mut garbled.as_slice())
                .await
                .is_err()
        );
        // Cut off mid-message: an error, not a clean end.
        let cut = encode(&FromWorker::Poster { id: 1, error: None }, b"abc").unwrap();
        assert!(read::<FromWorker>(&mut &cut[..cut.len() - 1]).is_err());
    }
}
