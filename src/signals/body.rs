//! An upstream's answer read within `limits.maxResponseBytes`, and described without its content.
//!
//! Trigger addresses are tenant input: an answer may come from an endpoint the tenant must not
//! read (a cloud metadata service, an internal API). Errors therefore name the status, the content
//! type and the length of an answer, never its bytes.

use bytes::{Bytes, BytesMut};

/// A whole answer, at most the limit long.
pub struct Answer {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// The `content-type` header, or `no content type`.
    pub content_type: String,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// `HTTP 503, text/html, 1234 bytes`: what a user may see of an answer that made no sense.
    pub fn describe(&self) -> String {
        format!("HTTP {}, {}, {} bytes", self.status.as_u16(), self.content_type, self.body.len())
    }
}

/// Why no answer could be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// The request or the body failed (connection refused, timeout, ...): the error and its causes.
    #[error("request failed: {0}")]
    Request(String),
    /// The body (declared or read) is longer than the limit.
    #[error("the response body is longer than limits.maxResponseBytes ({limit} bytes)")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

/// Sends `request` and reads the answer, refusing a body longer than `limit` bytes as soon as it
/// is declared or received: an endless body costs at most `limit` bytes of memory.
pub async fn fetch(request: reqwest::RequestBuilder, limit: usize) -> Result<Answer, ReadError> {
    let failed = |e: reqwest::Error| ReadError::Request(super::error_chain(&e.without_url()));
    let mut response = request.send().await.map_err(failed)?;
    if response.content_length().is_some_and(|declared| declared > limit as u64) {
        return Err(ReadError::TooLarge { limit });
    }
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "no content type".to_string(), |v| v.chars().take(100).collect());
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, content_type, body: body.freeze() })
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An endpoint that answers every connection with `head` and then `body_bytes` bytes of `x`.
    async fn endpoint(head: &'static str, body_bytes: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let _ = socket.write_all(head.as_bytes()).await;
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut left = body_bytes;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if socket.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                        left -= n;
                    }
                });
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn an_endless_body_is_cut_at_the_limit() {
        let url = endpoint("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n", 64 * 1024 * 1024).await;
        let http = reqwest::Client::new();
        let err = fetch(http.get(&url), 1024 * 1024).await.err().expect("too large");
        assert_eq!(err, ReadError::TooLarge { limit: 1024 * 1024 });
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let url = endpoint("HTTP/1.1 200 OK\r\ncontent-length: 999999999\r\n\r\n", 10).await;
        let err = fetch(reqwest::Client::new().get(&url), 1000).await.err().expect("too large");
        assert_eq!(err, ReadError::TooLarge { limit: 1000 });
    }

    #[tokio::test]
    async fn an_answer_is_described_without_its_content() {
        let url =
            endpoint("HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 26\r\n\r\n", 26).await;
        let answer = fetch(reqwest::Client::new().get(&url), 1000).await.expect("read");
        assert_eq!(answer.describe(), "HTTP 403, text/plain, 26 bytes");
    }
}
