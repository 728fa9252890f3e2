//! The registry of remote functions compiled into this binary.
//!
//! `#[manta::remote]` submits one [`RemoteFunction`] per function through `inventory`; a worker
//! process of the same binary looks a task's function up by name. Two pitfalls are guarded:
//! the linker drops the registrations of a crate the binary never references (so the facade's
//! tests assert the registry holds what they define), and two binaries built from different code
//! must not exchange tasks (so [`fingerprint`] names the registry's exact contents, to be compared
//! when a worker or node joins).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// One registered function: its name and the shim that decodes its arguments, calls it and
/// encodes its output.
#[derive(Debug)]
pub struct RemoteFunction {
    /// `module::path::function#signature-hash`.
    pub name: &'static str,
    /// Runs the function on MessagePack-encoded arguments.
    pub invoke: fn(&[u8]) -> Result<Vec<u8>, InvokeError>,
}

inventory::collect!(RemoteFunction);

/// Running a registered function failed before or after the function itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The arguments did not decode as the function's parameter types.
    #[error("{function}: arguments do not decode: {reason}")]
    Arguments {
        /// The function.
        function: &'static str,
        /// Why.
        reason: String,
    },
    /// The output could not be encoded.
    #[error("{function}: output does not encode: {reason}")]
    Output {
        /// The function.
        function: &'static str,
        /// Why.
        reason: String,
    },
}

/// The registry is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two functions share a name (the same module path and signature registered twice).
    #[error("remote function {0} is registered twice")]
    Duplicate(&'static str),
}

/// Decodes a function's arguments (used by `#[manta::remote]`).
pub fn decode_arguments<T: DeserializeOwned>(function: &'static str, bytes: &[u8]) -> Result<T, InvokeError> {
    rmp_serde::from_slice(bytes)
        .map_err(|error| InvokeError::Arguments { function, reason: error.to_string() })
}

/// Encodes a function's output (used by `#[manta::remote]`).
pub fn encode_output<T: Serialize>(function: &'static str, output: &T) -> Result<Vec<u8>, InvokeError> {
    rmp_serde::to_vec(output).map_err(|error| InvokeError::Output { function, reason: error.to_string() })
}

/// Encodes arguments for [`RemoteFunction::invoke`] (a tuple, in parameter order).
pub fn encode_arguments<T: Serialize>(arguments: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec(arguments)
}

fn table() -> &'static Result<BTreeMap<&'static str, &'static RemoteFunction>, RegistryError> {
    static TABLE: OnceLock<Result<BTreeMap<&'static str, &'static RemoteFunction>, RegistryError>> =
        OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = BTreeMap::new();
        for function in inventory::iter::<RemoteFunction> {
            if table.insert(function.name, function).is_some() {
                return Err(RegistryError::Duplicate(function.name));
            }
        }
        Ok(table)
    })
}

/// Checks the registry (no duplicate names); call once at start-up.
pub fn check() -> Result<usize, RegistryError> {
    table().as_ref().map(BTreeMap::len).map_err(Clone::clone)
}

/// The function registered under `name`.
pub fn lookup(name: &str) -> Option<&'static RemoteFunction> {
    table().as_ref().ok()?.get(name).copied()
}

/// Every registered name, in order.
pub fn names() -> Vec<&'static str> {
    table().as_ref().map(|table| table.keys().copied().collect()).unwrap_or_default()
}

/// A 64-bit FNV-1a hash of the sorted registered names (which include signature hashes): equal
/// for two binaries exactly when they register the same functions with the same signatures.
pub fn fingerprint() -> u64 {
    names().iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, name| {
        name.bytes()
            .chain([0])
            .fold(hash, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
    })
}
