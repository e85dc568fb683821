//! The plumbing the server's request layers share (the limits, auth, observe): each layer is
//! an [`Around`], which says what it does with one call; [`Wrapped`], the tower `Service`
//! that runs it, is written once here.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use tonic::{body::Body, Status};
use tower::Service;

/// What a call through a layer returns: the response, later.
pub type Called<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

/// What a body a layer wraps (a request's, a response's) yields when polled.
pub type Polled = Poll<Option<Result<Frame<Bytes>, Status>>>;

/// The service a layer wraps: the next layer, or the routes.
pub trait Inner:
    Service<Request<Body>, Response = Response<Body>, Future: Send + 'static, Error: Send + 'static>
    + Send
    + 'static
{
}

impl<S> Inner for S where
    S: Service<
            Request<Body>,
            Response = Response<Body>,
            Future: Send + 'static,
            Error: Send + 'static,
        > + Send
        + 'static
{
}

/// What one request layer does with a call; `inner` is the service made ready for it.
pub trait Around: Clone {
    fn call<S: Inner>(&self, inner: S, request: Request<Body>) -> Called<S::Error>;
}

/// The service of the layer `A` around the service `S`.
#[derive(Clone)]
pub struct Wrapped<S, A> {
    inner: S,
    around: A,
}

impl<S, A> Wrapped<S, A> {
    pub fn new(inner: S, around: A) -> Self {
        Wrapped { inner, around }
    }
}

impl<S, A> Service<Request<Body>> for Wrapped<S, A>
where
    A: Around,
    S: Inner + Clone,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Called<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was made ready must be the one called.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        self.around.call(inner, request)
    }
}
