//! Bounded reads of a provider's answers (discovery, JWKS, token, introspection, userinfo).
//!
//! A provider (or whoever answers in its place) chooses the size of its answers; reading a
//! chunked body whole before checking it would let one answer take hundreds of megabytes on
//! every login. Bodies are read chunk by chunk and abandoned at the bound.

use bytes::{Bytes, BytesMut};

/// Far above any real answer (a JWKS of dozens of keys, an ID token with hundreds of groups).
pub(crate) const MAX_ANSWER: usize = 256 * 1024;

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the answer failed: {0}")]
    Read(String),
}

/// The body of `resp`, at most `max` bytes.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Bytes, BodyError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge(max));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| BodyError::Read(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering `total` bytes in 64 KiB chunks (no Content-Length).
    async fn chunked(total: usize) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| async move {
                        let chunks = (0..total.div_ceil(65536)).map(move |i| {
                            let n = (total - i * 65536).min(65536);
                            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                Bytes::from(vec![b'x'; n]),
                            ))
                        });
                        let body =
                            http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn a_large_chunked_answer_is_abandoned_at_the_bound() {
        let small = chunked(1000).await;
        let resp = reqwest::get(&small).await.unwrap();
        assert_eq!(read_capped(resp, 4096).await.unwrap().len(), 1000);
        // 64 MiB offered: refused after reading little more than the bound.
        let huge = chunked(64 << 20).await;
        let resp = reqwest::get(&huge).await.unwrap();
        assert_eq!(
            read_capped(resp, MAX_ANSWER).await,
            Err(BodyError::TooLarge(MAX_ANSWER))
        );
    }
}
