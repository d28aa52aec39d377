//! The benchmark harness: the load generator's parts (`load`, `publish`, `stats`,
//! `report`, `tls`) and the `/proc` readings (`procfs`) that the `sse-bench` and `floor`
//! binaries share; the figures of the server's load tests (`reliability`); and the start
//! of Redis (alone, or under Sentinel) and nginx from `deploy/` (`deploy`) that `xtask`
//! and the server's tests share. `docs/architecture.md` maps it.
//!
//! Without the `programs` feature only the report types are built (`report`, `stats`,
//! `procfs`, and `reliability`, the figures the server's load tests write): `cargo
//! xtask` reads the programs' and the tests' JSON back into them, so a renamed field
//! fails to deserialise instead of printing "n/a". `deploy` (std only, too) starts
//! Redis, its Sentinels and nginx from `deploy/` for xtask and the server's tests alike.

pub mod deploy;
#[cfg(feature = "programs")]
pub mod load;
pub mod procfs;
#[cfg(feature = "programs")]
pub mod publish;
pub mod reliability;
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
