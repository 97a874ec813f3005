//! Length-prefixed JSON frames for the pub/sub (1002) and task (1003) services: a 4-byte
//! big-endian length, then that many bytes of one JSON object. Reading is bounded by a
//! maximum length that the caller chooses, and decoding is a pure function (fuzzed).

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A frame longer than the allowed maximum.
    #[error("frame of {0} bytes exceeds the {1}-byte limit")]
    TooLarge(usize, usize),
    /// A frame whose body is not the expected JSON.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream failed or ended inside a frame.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `value` as one frame (length and body).
pub fn encode<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(value).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() > max {
        return Err(FrameError::TooLarge(body.len(), max));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes one frame's body (the bytes after the length).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Writes one frame and flushes.
pub async fn write<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
    max: usize,
) -> Result<(), FrameError> {
    w.write_all(&encode(value, max)?).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes; `Ok(None)` on a clean end before a frame starts.
pub async fn read<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    max: usize,
) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    let n = r.read(&mut len[..1]).await?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len, max));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    decode(&body).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_round_trips_and_a_long_one_is_refused_before_its_body_is_read() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write(&mut a, &serde_json::json!({"x": 1}), 100)
            .await
            .unwrap();
        let v: serde_json::Value = read(&mut b, 100).await.unwrap().unwrap();
        assert_eq!(v["x"], 1);
        a.write_all(&1000u32.to_be_bytes()).await.unwrap();
        let e = read::<_, serde_json::Value>(&mut b, 100).await.unwrap_err();
        assert!(matches!(e, FrameError::TooLarge(1000, 100)), "{e:?}");
        drop(a);
        let (mut c, mut d) = tokio::io::duplex(64);
        drop(c.shutdown().await);
        drop(c);
        assert!(read::<_, serde_json::Value>(&mut d, 100)
            .await
            .unwrap()
            .is_none());
    }
}
