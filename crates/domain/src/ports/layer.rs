//! Decorating a store once per concern.

use std::future::Future;

use crate::authz::{Action, Resource};
use crate::error::StoreError;

/// What a layer knows of the store call it wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallInfo {
    /// The store method, e.g. `flush_boundary_usage`.
    pub name: &'static str,
    /// Every (action, resource) pair a caller must be allowed.
    pub needs: &'static [(Action, Resource)],
}

/// A concern applied around every store call: it may refuse the call
/// (without polling `call`), bound it in time, measure it, or change its
/// result. Implement it once; [`Layered`] applies it to every method of
/// every store port.
pub trait Layer: Send + Sync {
    /// Runs `call` (a store method, described by `info`) with this concern
    /// around it.
    fn around<T, F>(
        &self,
        info: &'static CallInfo,
        call: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send,
        F: Future<Output = Result<T, StoreError>> + Send;
}

/// A store with a [`Layer`] around each of its calls. Layers nest:
/// `Layered::new(Layered::new(store, a), b)` runs `b`, then `a`, then the store.
#[derive(Debug, Clone)]
pub struct Layered<S, L> {
    pub(crate) inner: S,
    pub(crate) layer: L,
}

impl<S, L> Layered<S, L> {
    /// Wraps `inner` in `layer`.
    pub fn new(inner: S, layer: L) -> Self {
        Self { inner, layer }
    }

    /// The store inside.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The concern around it.
    pub fn layer(&self) -> &L {
        &self.layer
    }
}
