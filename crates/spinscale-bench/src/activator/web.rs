//! The HTTP ends of the activator bench: a fast backend (hyper, answers `ok`) and a keep-alive
//! HTTP/1.1 client connection.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A backend serving every request with a 3-byte body, one task per connection.
pub struct Backend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(Self { addr, task: serve(listener) })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `listener` until the returned task is aborted (connections already open go on).
pub fn serve(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

pub type Sender = SendRequest<Empty<Bytes>>;

/// The socket's side of a [`Sender`]: it must be polled for requests to go out, and dropping it
/// closes the socket.
pub type Connection = hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Empty<Bytes>>;

/// One HTTP/1.1 keep-alive connection to `addr`, driven by a task of its own.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let (sender, connection) = open(addr).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One HTTP/1.1 keep-alive connection to `addr`, for the caller to drive.
pub async fn open(addr: SocketAddr) -> anyhow::Result<(Sender, Connection)> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?)
}

/// `GET /` for `host` on the connection; its status once the whole body is in.
pub async fn get(sender: &mut Sender, host: &str) -> anyhow::Result<u16> {
    Ok(get_answer(sender, host).await?.status)
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, when given as such.
    pub retry_after: Option<u64>,
    pub body: Bytes,
}

/// `GET /` for `host` on the connection; the whole response.
pub async fn get_answer(sender: &mut Sender, host: &str) -> anyhow::Result<Answer> {
    sender.ready().await?;
    let request = Request::get("/").header(header::HOST, host).body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let retry_after =
        response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer { status, retry_after, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_backend_answers_many_requests_on_one_connection() {
        let backend = Backend::start().await.expect("backend");
        let mut sender = connect(backend.addr).await.expect("connect");
        for _ in 0..3 {
            assert_eq!(get(&mut sender, "any.host").await.expect("get"), 200);
        }
    }
}
