//! The request size limit. A request over [`MAX_REQUEST_BYTES`] is answered RESOURCE_EXHAUSTED,
//! as the gRPC status-code spec says (tonic's own decode limit answers OUT_OF_RANGE), and the
//! connection stays usable.
//!
//! Every zsc RPC takes exactly one request message, so limiting the request body to one
//! message plus its 5-byte gRPC frame header limits the message.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{body::Body, Status};
use tower::{Layer, Service};

pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
const GRPC_FRAME_HEADER: usize = 5;

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
        let request = request.map(|body| {
            Body::new(LimitedBody {
                inner: body,
                remaining: MAX_REQUEST_BYTES + GRPC_FRAME_HEADER,
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
