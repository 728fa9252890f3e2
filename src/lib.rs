//! Manta facade.
