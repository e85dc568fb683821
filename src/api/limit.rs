//! What one client may take: the limits on connections, streams and requests, with their
//! defaults written once ([`DEFAULT_LIMITS`], which `zsc serve`'s flags show and
//! `Config::new` uses), and the request layer that enforces the per-request ones on every
//! service of every listener:
//! - a message over `max_message_bytes` is answered RESOURCE_EXHAUSTED as soon as its 5-byte
//!   gRPC frame header declares it, before its bytes are buffered (tonic's own decode limit,
//!   set to the same number on every service, would answer OUT_OF_RANGE; the gRPC status-code
//!   spec says RESOURCE_EXHAUSTED), and the connection stays usable;
//! - a request body that delivers nothing for `body_read_timeout` is ended DEADLINE_EXCEEDED;
//! - a call whose response has not started within `request_timeout` (a unary call, or a
//!   stream still reading its request) is answered DEADLINE_EXCEEDED. A stream that has
//!   started (WatchRevocations, Health/Watch) is not limited by it.
//!
//! The same wrapper follows the body's gRPC framing ([`super::framing`]): a body that ends
//! without a whole message is answered INVALID_ARGUMENT, as bad input, not INTERNAL.
//!
//! The connection-level limits (HTTP/2 settings, the connection cap, the handshake timeout)
//! are applied by `server` and `shutdown`.

use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tonic::{body::Body, Status};
use tower::Layer;

use super::framing::Framing;
use super::layer::{Around, Called, Inner, Polled, Wrapped};
use crate::domain::shown;

/// Every limit `zsc serve` applies; see [`DEFAULT_LIMITS`] for what each means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request message, in bytes (every zsc request is far smaller).
    pub max_message_bytes: usize,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: streams one connection may have open; the
    /// client's streams beyond it are refused (RST_STREAM REFUSED_STREAM).
    pub max_concurrent_streams: u32,
    /// Open connections per listener; connections accepted beyond it are closed at once.
    pub max_connections: usize,
    /// h2's reset-flood guard: a connection whose peer makes the server reset this many
    /// streams for protocol errors is closed (GOAWAY ENHANCE_YOUR_CALM).
    pub max_local_error_resets: usize,
    /// A call must have started its response within this.
    pub request_timeout: Duration,
    /// A request body must deliver its next bytes within this.
    pub body_read_timeout: Duration,
    /// A new connection must finish its TLS handshake and send the HTTP/2 preface within this.
    pub handshake_timeout: Duration,
    /// HTTP/2 PING interval on idle connections...
    pub keepalive_interval: Duration,
    /// ...and how long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

/// The defaults, in one place.
pub const DEFAULT_LIMITS: Limits = Limits {
    max_message_bytes: 64 * 1024,
    // hyper's own default, which tonic overrides with "unlimited".
    max_concurrent_streams: 200,
    max_connections: 4096,
    // h2's own default, which tonic turns off.
    max_local_error_resets: 1024,
    request_timeout: Duration::from_secs(30),
    body_read_timeout: Duration::from_secs(10),
    handshake_timeout: Duration::from_secs(10),
    keepalive_interval: Duration::from_secs(20),
    keepalive_timeout: Duration::from_secs(10),
};

impl Default for Limits {
    fn default() -> Self {
        DEFAULT_LIMITS
    }
}

/// The methods whose request is a stream, which may hold no message at all: only reflection's.
const STREAMED_REQUESTS: &[&str] = &[
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Enforces the per-request limits; see the module docs.
#[derive(Clone, Copy)]
pub struct RequestLimitLayer {
    max_message_bytes: usize,
    body_read_timeout: Duration,
    request_timeout: Duration,
}

impl RequestLimitLayer {
    pub fn new(limits: &Limits) -> Self {
        RequestLimitLayer {
            max_message_bytes: limits.max_message_bytes,
            body_read_timeout: limits.body_read_timeout,
            request_timeout: limits.request_timeout,
        }
    }
}

impl<S> Layer<S> for RequestLimitLayer {
    type Service = Wrapped<S, Self>;

    fn layer(&self, inner: S) -> Self::Service {
        Wrapped::new(inner, *self)
    }
}

impl Around for RequestLimitLayer {
    fn call<S: Inner>(&self, mut inner: S, request: Request<Body>) -> Called<S::Error> {
        let limits = *self;
        let may_be_empty = STREAMED_REQUESTS.contains(&request.uri().path());
        let request = request.map(|body| {
            Body::new(LimitedBody {
                inner: body,
                framing: Framing::new(limits.max_message_bytes),
                may_be_empty,
                idle_timeout: limits.body_read_timeout,
                idle: None,
            })
        });
        let response = inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limits.request_timeout, response).await {
                Ok(response) => response,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "no response within the server's {} request timeout",
                    shown::duration(limits.request_timeout)
                ))
                .into_http()),
            }
        })
    }
}

pin_project_lite::pin_project! {
    struct LimitedBody {
        #[pin]
        inner: Body,
        framing: Framing,
        may_be_empty: bool,
        idle_timeout: Duration,
        // Armed only once the body has had to wait, so that a request whose body is already
        // here costs no timer.
        idle: Option<Pin<Box<Sleep>>>,
    }
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.project();
        let frame = match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                let timeout = *this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(idle.as_mut().poll(cx));
                return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                    "the request body sent nothing for {} (the server's body read timeout)",
                    shown::duration(timeout)
                )))));
            }
        };
        if let Some(idle) = this.idle.as_mut() {
            idle.as_mut().reset(Instant::now() + *this.idle_timeout);
        }
        if let Some(data) = frame
            .as_ref()
            .and_then(|f| f.as_ref().ok())
            .and_then(Frame::data_ref)
        {
            if let Err(declared) = this.framing.feed(data) {
                return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                    "request message of {declared} bytes is over the {}-byte limit",
                    this.framing.max()
                )))));
            }
        }
        if frame.is_none() {
            if let Some(why) = this.framing.incomplete(*this.may_be_empty) {
                // Once: the next poll ends the body.
                *this.may_be_empty = true;
                *this.framing = Framing::new(this.framing.max());
                return Poll::Ready(Some(Err(Status::invalid_argument(why))));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        // An incomplete body still has its error to give.
        self.inner.is_end_stream() && self.framing.incomplete(self.may_be_empty).is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
