//! Bodies: the client's request body lent to an attempt at the backend, and the response body
//! (the activator's own short answers, or the backend's, streamed).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::stats::InFlight;

/// A request body on its way to the backend. A non-empty body is taken from its slot on the
/// attempt's first poll, so an attempt that failed before sending any of it leaves it there
/// for a retry.
pub(super) enum OutBody {
    /// No body.
    Empty,
    /// The client's body, shared with the [`Lender`] until an attempt takes it.
    Lent { slot: Arc<Mutex<Option<Incoming>>>, taken: Option<Incoming>, hint: SizeHint },
}

/// The client's body, kept where a failed attempt can find it again.
pub(super) struct Lender {
    slot: Option<Arc<Mutex<Option<Incoming>>>>,
    hint: SizeHint,
}

impl Lender {
    /// Keeps `body` for the attempts to come.
    pub fn new(body: Incoming) -> Self {
        let hint = body.size_hint();
        let slot = (!body.is_end_stream()).then(|| Arc::new(Mutex::new(Some(body))));
        Self { slot, hint }
    }

    /// The body for one attempt.
    pub fn lend(&self) -> OutBody {
        match &self.slot {
            None => OutBody::Empty,
            Some(slot) => OutBody::Lent { slot: slot.clone(), taken: None, hint: self.hint },
        }
    }

    /// Whether no attempt has started sending the body (or there is none).
    pub fn unsent(&self) -> bool {
        self.slot.as_ref().is_none_or(|slot| slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some())
    }
}

impl Body for OutBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            OutBody::Empty => Poll::Ready(None),
            OutBody::Lent { slot, taken, .. } => {
                if taken.is_none() {
                    *taken = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                }
                match taken {
                    Some(body) => Pin::new(body).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutBody::Empty => true,
            OutBody::Lent { taken, .. } => taken.as_ref().is_some_and(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OutBody::Empty => SizeHint::with_exact(0),
            OutBody::Lent { taken: Some(body), .. } => body.size_hint(),
            OutBody::Lent { hint, .. } => *hint,
        }
    }
}

/// A response body to the client.
pub(super) enum ProxyBody {
    /// The activator's own answer.
    Local(Option<Bytes>),
    /// The backend's body, streamed; the request counts as in flight until it ends or drops.
    Backend { body: Incoming, _in_flight: InFlight },
}

impl ProxyBody {
    /// An answer of the activator's own.
    pub(super) fn text(text: String) -> Self {
        ProxyBody::Local(Some(Bytes::from(text)))
    }

    /// No body.
    pub(super) fn empty() -> Self {
        ProxyBody::Local(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Backend { body, .. } => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(bytes) => bytes.is_none(),
            ProxyBody::Backend { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Backend { body, .. } => body.size_hint(),
        }
    }
}
