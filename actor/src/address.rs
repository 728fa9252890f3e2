//! `ActorAddress`: how a peer names an actor, `node/name` (for example `127.0.0.1:7400/gcs`).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// The address of a named actor on a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActorAddress {
    /// The node's transport address.
    pub node: SocketAddr,
    /// The name the actor is registered under there.
    pub name: String,
}

impl ActorAddress {
    /// `name` on `node`.
    pub fn new(node: SocketAddr, name: impl Into<String>) -> Self {
        ActorAddress { node, name: name.into() }
    }
}

impl fmt::Display for ActorAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.name)
    }
}

/// A string that is not `address/name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an actor address is `host:port/name`, got {0:?}")]
pub struct ParseAddressError(pub String);

impl FromStr for ActorAddress {
    type Err = ParseAddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseAddressError(text.to_owned());
        let (node, name) = text.split_once('/').ok_or_else(error)?;
        if name.is_empty() {
            return Err(error());
        }
        Ok(ActorAddress { node: node.parse().map_err(|_| error())?, name: name.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_address_prints_and_parses_back(
            ip in any::<[u8; 4]>(),
            port in any::<u16>(),
            name in "[a-zA-Z0-9_./-]{1,40}",
        ) {
            let address = ActorAddress::new(SocketAddr::from((ip, port)), name);
            prop_assert_eq!(address.to_string().parse::<ActorAddress>(), Ok(address));
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,60}") {
            let _ = text.parse::<ActorAddress>();
        }
    }

    #[test]
    fn parses_and_prints() {
        let address: ActorAddress = "127.0.0.1:7400/gcs".parse().unwrap();
        assert_eq!(address.node, "127.0.0.1:7400".parse().unwrap());
        assert_eq!(address.name, "gcs");
        assert_eq!(address.to_string(), "127.0.0.1:7400/gcs");
        assert!("127.0.0.1:7400".parse::<ActorAddress>().is_err());
        assert!("127.0.0.1:7400/".parse::<ActorAddress>().is_err());
        assert!("nowhere/gcs".parse::<ActorAddress>().is_err());
    }
}
