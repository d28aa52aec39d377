//! The benchmark harness: the load generator's parts (`load`, `publish`, `stats`,
//! `report`, `tls`) and the `/proc` readings (`procfs`) that the `sse-bench` and `floor`
//! binaries share.
//!
//! Without the `programs` feature only the report types are built (`report`, `stats`,
//! `procfs`): `cargo xtask bench` reads the programs' JSON back into them, so a renamed
//! field fails to deserialise instead of printing "n/a".

#[cfg(feature = "programs")]
pub mod load;
pub mod procfs;
#[cfg(feature = "programs")]
pub mod publish;
pub mod report;
pub mod stats;
#[cfg(feature = "programs")]
pub mod tls;

/// Raises this process's open-files soft limit to its hard limit (children inherit it)
/// and returns the new soft limit.
pub fn raise_nofile_limit() -> anyhow::Result<u64> {
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    Ok(rlimit::increase_nofile_limit(hard)?)
}
