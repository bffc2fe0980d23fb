//! `store_ports!`: the one place a store method is declared.
//!
//! Each method is written once, with the (action, resource) pairs a caller
//! needs. From that one declaration the macro generates:
//! - the trait (with `async_trait`);
//! - the forwarding impl for `Arc<T>`;
//! - the impl for [`Layered<S, L>`](super::Layered), which routes the call
//!   through `L::around` with a static [`CallInfo`](super::CallInfo) naming
//!   the method and its needs;
//! - under the `mocks` feature, a mockall mock of each trait (`MockAppStatsStore`...)
//!   and `MockStore`, one mock with every trait.
//!
//! So a decorator (authorization, deadline, metrics, fault injection) is one
//! [`Layer`](super::Layer) impl, not one impl per method.
//!
//! How: mockall cannot read types that went through a `ty` fragment (they
//! arrive wrapped in invisible groups), so the macro munches each signature
//! as raw tokens for the trait and the mock, and parses it with fragments
//! only to learn the argument names for the forwarding impls.

macro_rules! store_ports {
    // Every trait read: emit.
    (@traits [$({
        [$($trait_attr:tt)*] $port:ident
        $([$($method_attr:tt)*] [$($action:ident $resource:ident),*] $method:ident ($($params:tt)*)
            [$($ret:tt)*] [$($arg:ident: $arg_ty:ty),*])*
    })*]) => {
        $(
            $($trait_attr)*
            #[async_trait::async_trait]
            pub trait $port: Send + Sync {
                $(
                    $($method_attr)*
                    async fn $method(&self $($params)*) -> $($ret)*;
                )*
            }

            // Shared handles are stores too, so wrappers and services can
            // hold an `Arc<dyn Store>` or an `Arc<ConcreteStore>` alike.
            #[async_trait::async_trait]
            impl<T: $port + ?Sized> $port for std::sync::Arc<T> {
                $(
                    async fn $method(&self $(, $arg: $arg_ty)*) -> $($ret)* {
                        (**self).$method($($arg),*).await
                    }
                )*
            }

            #[async_trait::async_trait]
            impl<S: $port, L: $crate::ports::Layer> $port for $crate::ports::Layered<S, L> {
                $(
                    async fn $method(&self $(, $arg: $arg_ty)*) -> $($ret)* {
                        static CALL: $crate::ports::CallInfo = $crate::ports::CallInfo {
                            name: stringify!($method),
                            needs: &[$(($crate::authz::Action::$action, $crate::authz::Resource::$resource)),*],
                        };
                        self.layer.around(&CALL, self.inner.$method($($arg),*)).await
                    }
                )*
            }
        )*

        /// Mocks of each port (`MockAppStatsStore`...) and of the whole store
        /// (`MockStore`).
        #[cfg(any(test, feature = "mocks"))]
        #[allow(missing_debug_implementations)]
        mod mocks {
            use super::*;
            $(
                mockall::mock! {
                    pub $port {}
                    #[async_trait::async_trait]
                    impl $port for $port {
                        $(async fn $method(&self $($params)*) -> $($ret)*;)*
                    }
                }
            )*
            mockall::mock! {
                /// A whole store, for tests that need every port at once.
                pub Store {}
                $(
                    #[async_trait::async_trait]
                    impl $port for Store {
                        $(async fn $method(&self $($params)*) -> $($ret)*;)*
                    }
                )*
            }
        }
        #[cfg(any(test, feature = "mocks"))]
        pub use mocks::*;
    };
    // The next trait: read its methods.
    (@traits [$($done:tt)*] $(#[$($trait_attr:tt)*])* pub trait $port:ident { $($body:tt)* } $($rest:tt)*) => {
        $crate::ports::declare::store_ports!(@methods [$($done)*] [[$(#[$($trait_attr)*])*] $port] [] [$($rest)*] $($body)*);
    };
    // A trait's methods all read: back to the traits.
    (@methods [$($done:tt)*] [$trait_attrs:tt $port:ident] [$($methods:tt)*] [$($rest:tt)*]) => {
        $crate::ports::declare::store_ports!(@traits [$($done)* { $trait_attrs $port $($methods)* }] $($rest)*);
    };
    // A method: learn its argument names.
    (@methods $done:tt $port:tt $methods:tt $rest:tt
        $(#[$($method_attr:tt)*])* needs($($needs:tt)*) async fn $method:ident (&self $($params:tt)*) -> $ret:ty; $($tail:tt)*) => {
        $crate::ports::declare::store_ports!(@args $done $port $methods $rest [$($tail)*]
            [[$(#[$($method_attr)*])*] [$($needs)*] $method ($($params)*) [$ret]] $method (&self $($params)*));
    };
    (@args $done:tt $port:tt [$($methods:tt)*] $rest:tt [$($tail:tt)*] [$($record:tt)*]
        $method:ident (&self $(, $arg:ident: $arg_ty:ty)* $(,)?)) => {
        $crate::ports::declare::store_ports!(@methods $done $port [$($methods)* $($record)* [$($arg: $arg_ty),*]] $rest $($tail)*);
    };
    // The entry point.
    ($($traits:tt)*) => {
        $crate::ports::declare::store_ports!(@traits [] $($traits)*);
    };
}

pub(crate) use store_ports;
