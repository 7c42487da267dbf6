//! Limits on what the activator takes on for all apps together: held requests, the request
//! bodies they keep waiting, and the size and pace of request heads.
//!
//! A held request's body is not read while it waits: it stays in the client's connection. What
//! the connection may already have read of it is bounded by the protocol: for HTTP/1.1 by the
//! connection's read buffer ([`h1_read_buffer`]), for h2c by the stream's flow-control window
//! ([`H2_STREAM_WINDOW`]). The budget counts a body's declared length (`Content-Length`), or,
//! when it declares none, that bound.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::body::Body;

/// hyper's default HTTP/1.1 read buffer cap (`max_buf_size`), set explicitly so the body budget
/// knows it.
const H1_READ_BUFFER: usize = 8192 + 4096 * 100;

/// The flow-control window of an h2c request stream (hyper's default, set explicitly so the body
/// budget knows it): how much of a body the client may send before the activator reads it.
pub(super) const H2_STREAM_WINDOW: u32 = 1024 * 1024;

/// What the activator takes on for all apps together. Given at construction
/// ([`Activator::with_limits`](super::Activator::with_limits)) and replaceable while it runs
/// ([`Activator::set_limits`](super::Activator::set_limits)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivatorLimits {
    /// Requests held at once, all apps together. One more is answered `503` with `Retry-After: 1`
    /// at once, never queued. Each route's own `max_held` applies as well. Default 10,000.
    pub max_held_requests: usize,
    /// Request body bytes of held requests, all apps together: a body's declared length
    /// (`Content-Length`), or for a body of unknown length (chunked, or h2c without
    /// `Content-Length`) the most its connection may have read of it while it waits (408 KiB
    /// for HTTP/1.1, or `max_header_bytes` if more; 1 MiB for h2c). A request whose body would pass the budget is
    /// answered `503` with `Retry-After: 1` at once. A held request gives its share back when it
    /// is released to its backend, answered, timed out, or its client goes away. Default 64 MiB.
    pub max_held_body_bytes: u64,
    /// How long an HTTP/1.1 client gets to send a request head, from when the activator starts
    /// waiting for it: on a new connection, and on a keep-alive connection once the previous
    /// response is sent. A client that stalls in a head, or leaves a keep-alive connection idle,
    /// is disconnected after it (without an answer). A new connection first gets this long to
    /// show whether it speaks HTTP/1.1 or h2c (its first byte, or the 24 bytes of the h2c
    /// preface), so a client that drips those gets up to twice this. h2c connections are not
    /// bounded by it once they sent the preface. [`Duration::ZERO`] disables it. Default 10 s.
    pub header_read_timeout: Duration,
    /// The longest HTTP/1.1 request head in bytes (request line, headers and the blank line that
    /// ends them); a longer one is answered `431 Request Header Fields Too Large` and its
    /// connection closed. For h2c it bounds the header list as HTTP/2 counts it (names, values
    /// and 32 bytes per field), also answered `431`. Default 64 KiB.
    pub max_header_bytes: usize,
}

impl ActivatorLimits {
    /// Held requests, all apps together, unless set otherwise.
    pub const DEFAULT_MAX_HELD_REQUESTS: usize = 10_000;
    /// Body bytes of held requests, all apps together, unless set otherwise: 64 MiB.
    pub const DEFAULT_MAX_HELD_BODY_BYTES: u64 = 64 * 1024 * 1024;
    /// The time to send a request head, unless set otherwise.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// The longest request head, unless set otherwise: 64 KiB.
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
}

impl Default for ActivatorLimits {
    /// 10,000 held requests, 64 MiB of their bodies, 10 s to send a head, heads up to 64 KiB.
    fn default() -> Self {
        Self {
            max_held_requests: Self::DEFAULT_MAX_HELD_REQUESTS,
            max_held_body_bytes: Self::DEFAULT_MAX_HELD_BODY_BYTES,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            max_header_bytes: Self::DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// The HTTP/1.1 read buffer cap for these limits: hyper's default, or more when heads may be
/// longer (a head must fit in the buffer).
pub(super) fn h1_read_buffer(limits: &ActivatorLimits) -> usize {
    H1_READ_BUFFER.max(limits.max_header_bytes.saturating_add(1))
}

/// A request body's size as far as the hold budget is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodySize {
    /// Declared (`Content-Length`), or none at all (0).
    Known(u64),
    /// Not declared: chunked (HTTP/1.1) or an h2c stream without `Content-Length`.
    Unknown {
        /// Sent over h2c.
        h2: bool,
    },
}

impl BodySize {
    /// The size `request` declares for its body.
    pub fn of<B: Body>(request: &http::Request<B>) -> Self {
        let body = request.body();
        if body.is_end_stream() {
            return BodySize::Known(0);
        }
        match body.size_hint().exact() {
            Some(length) => BodySize::Known(length),
            None => BodySize::Unknown { h2: request.version() == http::Version::HTTP_2 },
        }
    }

    /// The bytes it counts against [`ActivatorLimits::max_held_body_bytes`].
    pub fn charge(self, limits: &ActivatorLimits) -> u64 {
        match self {
            BodySize::Known(length) => length,
            BodySize::Unknown { h2: true } => u64::from(H2_STREAM_WINDOW),
            BodySize::Unknown { h2: false } => h1_read_buffer(limits) as u64,
        }
    }
}

/// The held requests of all apps and their body bytes.
#[derive(Default)]
pub(super) struct HeldTotals {
    requests: AtomicUsize,
    body_bytes: AtomicU64,
}

/// Why [`HeldTotals::reserve`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OverLimit {
    /// [`ActivatorLimits::max_held_requests`] requests are held already.
    Requests {
        /// The limit.
        max: usize,
    },
    /// The body would pass [`ActivatorLimits::max_held_body_bytes`].
    BodyBytes {
        /// The body's charge.
        charge: u64,
        /// The limit.
        max: u64,
    },
}

impl HeldTotals {
    /// Held requests and their body bytes now.
    pub fn get(&self) -> (usize, u64) {
        (self.requests.load(Ordering::Acquire), self.body_bytes.load(Ordering::Acquire))
    }

    /// Takes a place for one held request with a body of `charge` bytes, within `limits`; the
    /// place is given back when the returned guard drops.
    pub fn reserve(&self, charge: u64, limits: &ActivatorLimits) -> Result<Reserved<'_>, OverLimit> {
        let max = limits.max_held_requests;
        if self.requests.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_err() {
            return Err(OverLimit::Requests { max });
        }
        let max_bytes = limits.max_held_body_bytes;
        let fits = |held: u64| held.checked_add(charge).filter(|&total| total <= max_bytes);
        if charge > 0 && self.body_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, fits).is_err() {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(OverLimit::BodyBytes { charge, max: max_bytes });
        }
        Ok(Reserved { totals: self, charge })
    }
}

/// One held request's place in the [`HeldTotals`]; dropping it gives the place back.
pub(super) struct Reserved<'a> {
    totals: &'a HeldTotals,
    charge: u64,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.charge > 0 {
            self.totals.body_bytes.fetch_sub(self.charge, Ordering::AcqRel);
        }
        self.totals.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests: usize, bytes: u64) -> ActivatorLimits {
        ActivatorLimits { max_held_requests: requests, max_held_body_bytes: bytes, ..ActivatorLimits::default() }
    }

    #[test]
    fn places_and_bytes_are_bounded_and_given_back() {
        let totals = HeldTotals::default();
        let limits = limits(3, 100);
        let a = totals.reserve(60, &limits).unwrap();
        assert_eq!(totals.reserve(41, &limits).err(), Some(OverLimit::BodyBytes { charge: 41, max: 100 }));
        assert_eq!(totals.get(), (1, 60), "a refusal takes nothing");
        let b = totals.reserve(40, &limits).unwrap();
        let c = totals.reserve(0, &limits).unwrap();
        assert_eq!(totals.get(), (3, 100));
        assert_eq!(totals.reserve(0, &limits).err(), Some(OverLimit::Requests { max: 3 }));
        drop((a, b, c));
        assert_eq!(totals.get(), (0, 0));
        assert_eq!(totals.reserve(u64::MAX, &limits).err(), Some(OverLimit::BodyBytes { charge: u64::MAX, max: 100 }));
        assert_eq!(totals.get(), (0, 0));
    }

    #[test]
    fn bodies_are_charged_their_declared_or_bufferable_size() {
        let limits = ActivatorLimits::default();
        let request = |version, body: http_body_util::Full<bytes::Bytes>| {
            http::Request::builder().version(version).body(body).unwrap()
        };
        let sized = request(http::Version::HTTP_11, http_body_util::Full::new(bytes::Bytes::from_static(b"12345")));
        assert_eq!(BodySize::of(&sized), BodySize::Known(5));
        assert_eq!(BodySize::of(&request(http::Version::HTTP_11, Default::default())), BodySize::Known(0));
        assert_eq!(BodySize::Unknown { h2: false }.charge(&limits), H1_READ_BUFFER as u64);
        assert_eq!(BodySize::Unknown { h2: true }.charge(&limits), 1024 * 1024);
        let long_heads = ActivatorLimits { max_header_bytes: 1 << 20, ..limits };
        assert_eq!(BodySize::Unknown { h2: false }.charge(&long_heads), (1 << 20) + 1);
    }
}
