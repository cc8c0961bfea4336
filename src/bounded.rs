//! Reading an upstream answer with a size cap: PocketBase and Coolify bodies are streamed into memory
//! only up to a limit chosen per endpoint, so a hostile or broken upstream answering hundreds of
//! megabytes costs the bridge at most the limit, and the caller gets an error naming the endpoint.

use futures_util::StreamExt;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the answer is larger than {}", human(*.limit))]
    TooLarge { limit: usize },
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
}

/// `n` bytes for a message: "64 MiB", "512 KiB".
pub fn human(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// The whole body, if it is at most `limit` bytes. A larger declared `Content-Length` fails before
/// anything is read.
pub async fn read(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    let declared = resp.content_length().and_then(|n| usize::try_from(n).ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge { limit });
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// At most the first `limit` bytes of the body, the rest dropped unread: for error answers, whose text
/// only feeds a message.
pub async fn read_prefix(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(64 << 20), "64 MiB");
        assert_eq!(human(512 << 10), "512 KiB");
        assert_eq!(human(1000), "1000 bytes");
    }
}
