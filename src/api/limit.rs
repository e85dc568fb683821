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
//! The connection-level limits (HTTP/2 settings, the connection cap, the handshake timeout)
//! are applied by `server` and `shutdown`.

use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tonic::{body::Body, Status};
use tower::{Layer, Service};

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

const GRPC_FRAME_HEADER: usize = 5;

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
    type Service = RequestLimit<S>;

    fn layer(&self, inner: S) -> RequestLimit<S> {
        RequestLimit {
            inner,
            limits: *self,
        }
    }
}

#[derive(Clone)]
pub struct RequestLimit<S> {
    inner: S,
    limits: RequestLimitLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for RequestLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let limits = self.limits;
        let request = request.map(|body| {
            Body::new(LimitedBody {
                inner: body,
                frames: MessageSizes::new(limits.max_message_bytes),
                idle_timeout: limits.body_read_timeout,
                idle: None,
            })
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limits.request_timeout, response).await {
                Ok(response) => response,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "no response within the server's {:?} request timeout",
                    limits.request_timeout
                ))
                .into_http()),
            }
        })
    }
}

/// Follows the gRPC length-prefixed framing of a request body across DATA frames, and reports
/// a message whose declared length is over the limit as soon as its header is complete.
#[derive(Debug)]
struct MessageSizes {
    max: usize,
    header: [u8; GRPC_FRAME_HEADER],
    header_len: usize,
    /// Bytes of the current message still to come.
    body_left: usize,
}

impl MessageSizes {
    fn new(max: usize) -> Self {
        MessageSizes {
            max,
            header: [0; GRPC_FRAME_HEADER],
            header_len: 0,
            body_left: 0,
        }
    }

    /// Takes the next bytes of the body; `Err(declared length)` for an over-size message.
    fn feed(&mut self, mut data: &[u8]) -> Result<(), usize> {
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len());
                self.body_left -= n;
                data = &data[n..];
                continue;
            }
            let n = (GRPC_FRAME_HEADER - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == GRPC_FRAME_HEADER {
                self.header_len = 0;
                let declared = u32::from_be_bytes(
                    self.header[1..]
                        .try_into()
                        .expect("a frame header has 4 length bytes"),
                ) as usize;
                if declared > self.max {
                    return Err(declared);
                }
                self.body_left = declared;
            }
        }
        Ok(())
    }
}

pin_project_lite::pin_project! {
    struct LimitedBody {
        #[pin]
        inner: Body,
        frames: MessageSizes,
        idle_timeout: Duration,
        // Armed only once the body has had to wait, so that a request whose body is already
        // here costs no timer.
        idle: Option<Pin<Box<Sleep>>>,
    }
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
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
                    "the request body sent nothing for {timeout:?} (the server's body read timeout)"
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
            if let Err(declared) = this.frames.feed(data) {
                return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                    "request message of {declared} bytes is over the {}-byte limit",
                    this.frames.max
                )))));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::MessageSizes;

    fn framed(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.resize(5 + len as usize, 7);
        bytes
    }

    #[test]
    fn messages_up_to_the_limit_pass_in_any_split() {
        let body: Vec<u8> = [framed(10), framed(0), framed(10)].concat();
        for chunk in 1..body.len() {
            let mut sizes = MessageSizes::new(10);
            for piece in body.chunks(chunk) {
                assert_eq!(sizes.feed(piece), Ok(()), "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn an_over_size_message_is_caught_by_its_header_even_split_and_after_others() {
        let mut body = framed(3);
        body.extend_from_slice(&[0, 0, 0x40, 0, 0]); // declares 4 MiB, sends nothing more
        for chunk in 1..body.len() {
            let mut sizes = MessageSizes::new(10);
            let outcome = body
                .chunks(chunk)
                .map(|piece| sizes.feed(piece))
                .find(Result::is_err);
            assert_eq!(outcome, Some(Err(4 * 1024 * 1024)), "chunks of {chunk}");
        }
    }
}
