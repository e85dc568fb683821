//! The request size limit. A request over [`MAX_REQUEST_BYTES`] is answered RESOURCE_EXHAUSTED,
//! as the gRPC status-code spec says (tonic's own decode limit answers OUT_OF_RANGE), and the
//! connection stays usable.
//!
//! Every zsc RPC takes exactly one request message, so limiting the request body to one
//! message plus its 5-byte gRPC frame header limits the message.
//!
//! The same wrapper follows the body's gRPC framing ([`super::framing`]): a body that ends
//! without a whole message is answered INVALID_ARGUMENT, as bad input, not INTERNAL.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{body::Body, Status};
use tower::{Layer, Service};

use super::framing::Framing;

pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
const GRPC_FRAME_HEADER: usize = 5;

/// The methods whose request is a stream, which may hold no message at all: only reflection's.
const STREAMED_REQUESTS: &[&str] = &[
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

#[derive(Clone, Copy, Default)]
pub struct RequestLimitLayer;

impl<S> Layer<S> for RequestLimitLayer {
    type Service = RequestLimit<S>;

    fn layer(&self, inner: S) -> RequestLimit<S> {
        RequestLimit { inner }
    }
}

#[derive(Clone)]
pub struct RequestLimit<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for RequestLimit<S>
where
    S: Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let may_be_empty = STREAMED_REQUESTS.contains(&request.uri().path());
        let request = request.map(|body| {
            Body::new(LimitedBody {
                inner: body,
                remaining: MAX_REQUEST_BYTES + GRPC_FRAME_HEADER,
                framing: Framing::default(),
                may_be_empty,
            })
        });
        self.inner.call(request)
    }
}

pin_project_lite::pin_project! {
    struct LimitedBody {
        #[pin]
        inner: Body,
        remaining: usize,
        framing: Framing,
        may_be_empty: bool,
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
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            let len = data.map_or(0, Bytes::len);
            if len > *this.remaining {
                return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                    "request is larger than the {MAX_REQUEST_BYTES}-byte limit"
                )))));
            }
            *this.remaining -= len;
            this.framing.feed(data.map_or(&[][..], |d| &d[..]));
        }
        if frame.is_none() {
            if let Some(why) = this.framing.incomplete(*this.may_be_empty) {
                // Once: the next poll ends the body.
                *this.may_be_empty = true;
                *this.framing = Framing::default();
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
