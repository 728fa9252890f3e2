//! Services as their clients see them: a [`Protocol`] names what a server is registered as and,
//! through [`Accepts`], which messages it handles. A client holds a `ServiceRef<P>` (in
//! `manta-actor`) typed by the protocol, never by the server's own type, so a CLI, a dashboard
//! or another process talks to the GCS or a raylet without linking their crates, and the
//! compiler still refuses a message the service does not accept.

use crate::WireMessage;

/// A service's protocol: the name its server is registered under on its node.
pub trait Protocol: 'static {
    /// The registration name (the `name` of `node/name`).
    const NAME: &'static str;
}

/// `Self`'s server handles `M`.
pub trait Accepts<M: WireMessage>: Protocol {}

/// Declares a protocol marker type, its registration name, and the messages it accepts.
macro_rules! protocol {
    ($(#[$doc:meta])* $name:ident = $registered:literal: $($message:ty),+ $(,)?) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}

        impl $crate::service::Protocol for $name {
            const NAME: &'static str = $registered;
        }

        $(impl $crate::service::Accepts<$message> for $name {})+
    };
}
pub(crate) use protocol;
